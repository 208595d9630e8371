"""Keeping the batch view current: one daily single-run range from minute_raw through the exchange backfill to
prophet_input, over the running month and every earlier month that no run has yet brought up to date.

Each error-free ``exchange_backfill`` records ``covered_until`` (its window is complete up to there, by the
exchange's clock). The daily range starts at the month of the newest such time, so after downtime, of any length,
the previous months' final days are filled too. In any case it holds the running month, and on the first days
of a month the previous one as well (the only rule without such a record: a new instance, or the backfill turned
off or skipped).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInstance,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    define_asset_job,
    schedule,
)

from crypto_assets.asset_names import DAILY_FILLED, DAILY_RAW, EXCHANGE_BACKFILL, MINUTE_GAPS, MINUTE_RAW, PROPHET_INPUT
from crypto_assets.batch.backfill.assets import COVERED_UNTIL
from crypto_assets.batch.partitions import RANGE_END_TAG, RANGE_START_TAG, batch_partitions
from crypto_assets.lake.layout import Month
from crypto_assets.settings import Settings

REFRESH_ASSETS = (MINUTE_RAW, MINUTE_GAPS, EXCHANGE_BACKFILL, DAILY_RAW, DAILY_FILLED, PROPHET_INPUT)
REFRESH_CRON = "10 0 * * *"  # 00:10 UTC: yesterday's last candle is closed and published
# Without a covered_until record, until this day of the month the previous month is refreshed too.
PREVIOUS_MONTH_DAYS = 3
RECORDS_READ = 500  # exchange_backfill materializations looked at (a whole-history range run writes ~180)


def refresh_months(day: date, first_month: Month, covered_until: datetime | None = None) -> tuple[Month, Month]:
    """First and last month to refresh on ``day``; ``covered_until`` is where the last error-free backfill
    left minute_raw complete (None when unknown)."""
    current = Month.of(day)
    first = current.previous() if day.day <= PREVIOUS_MONTH_DAYS else current
    if covered_until is not None:
        first = min(first, Month.of(covered_until))
    return max(first, first_month), max(current, first_month)


def last_covered(instance: DagsterInstance) -> datetime | None:
    """The newest ``covered_until`` among the exchange_backfill materializations since the backfill last ran
    disabled or skipped (older records would say nothing about the months since)."""
    records = instance.fetch_materializations(AssetKey(EXCHANGE_BACKFILL), limit=RECORDS_READ).records  # newest first
    covered = []
    for record in records:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        enabled = metadata.get("enabled")
        if (enabled is not None and enabled.value is False) or "skipped" in metadata:
            break
        if COVERED_UNTIL in metadata:
            covered.append(metadata[COVERED_UNTIL].value)
    return datetime.fromtimestamp(max(covered), UTC) if covered else None


def build_refresh_schedule(settings: Settings):
    job = define_asset_job(
        "batch_daily_refresh",
        selection=AssetSelection.assets(*REFRESH_ASSETS),
        description="From the first month not yet brought up to date (after downtime, earlier months too) to the "
        "running month: minute_raw through the exchange backfill to prophet_input, as one run",
    )
    first_month = Month.of(batch_partitions(settings).start)

    @schedule(
        job=job,
        cron_schedule=REFRESH_CRON,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description="Daily at 00:10 UTC: brings the batch view up to yesterday without a manual step, catching "
        "up on every month since the last complete backfill after downtime.",
    )
    def batch_daily_refresh_schedule(context: ScheduleEvaluationContext) -> RunRequest:
        moment = context.scheduled_execution_time or datetime.now(UTC)
        day = moment.astimezone(UTC).date()
        first, last = refresh_months(day, first_month, last_covered(context.instance))
        return RunRequest(
            run_key=f"batch-refresh-{day.isoformat()}",
            tags={RANGE_START_TAG: first.start.isoformat(), RANGE_END_TAG: last.start.isoformat()},
        )

    return job, batch_daily_refresh_schedule
