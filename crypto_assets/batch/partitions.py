"""Month partitions for the batch layer.

Dagster partitions the batch assets by month; symbols are a storage partition inside each run. Single-run
backfills of a date range need a plain time-window partitioning (a symbol x month multi-partition splits a
range backfill into one run per symbol and hides the range from the run), so every run handles all configured
symbols and writes each (symbol, month) file on its own.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from dagster import MonthlyPartitionsDefinition, TimeWindow

from crypto_assets.settings import Settings


def monthly_partitions(history_start: date) -> MonthlyPartitionsDefinition:
    # end_offset=1 includes the running month, so today's candles have a partition to land in.
    return MonthlyPartitionsDefinition(
        start_date=history_start.replace(day=1).isoformat(), timezone="UTC", end_offset=1
    )


def batch_partitions(settings: Settings) -> MonthlyPartitionsDefinition:
    """The batch assets' months: from the earliest symbol's own history (see ``history_starts``) to now."""
    from crypto_assets.batch.source_catalog import history_starts

    return monthly_partitions(min(history_starts(settings).values()))


def window_bounds(window: TimeWindow) -> tuple[datetime, datetime]:
    return window.start.astimezone(UTC), window.end.astimezone(UTC)


# Dagster's run tags of a single-run backfill over a range of partitions.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
