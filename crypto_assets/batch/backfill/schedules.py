"""Keeping the batch view current: one daily single-run range over the running month (and, on the first days
of a month, the one before), from minute_raw through the exchange backfill to prophet_input."""

from __future__ import annotations

from datetime import UTC, date, datetime

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    define_asset_job,
    schedule,
)

from crypto_assets.batch.partitions import monthly_partitions
from crypto_assets.batch.runs import RANGE_END_TAG, RANGE_START_TAG
from crypto_assets.lake.layout import Month
from crypto_assets.settings import Settings

REFRESH_ASSETS = ("minute_raw", "minute_gaps", "exchange_backfill", "daily_raw", "daily_filled", "prophet_input")
REFRESH_CRON = "10 0 * * *"  # 00:10 UTC: yesterday's last candle is closed and published
# Until this day of the month the previous month is refreshed too, so its last day is completed even when the
# run of the 1st was missed.
PREVIOUS_MONTH_DAYS = 3


def refresh_months(day: date, first_month: Month) -> tuple[Month, Month]:
    """First and last month to refresh on ``day``."""
    current = Month.of(day)
    first = current.previous() if day.day <= PREVIOUS_MONTH_DAYS else current
    return max(first, first_month), max(current, first_month)


def build_refresh_schedule(settings: Settings):
    job = define_asset_job(
        "batch_daily_refresh",
        selection=AssetSelection.assets(*REFRESH_ASSETS),
        description="The running month (and the previous one on the first days of a month) from minute_raw "
        "through the exchange backfill to prophet_input, as one run",
    )
    first_month = Month.of(monthly_partitions(settings.history_start).start)

    @schedule(
        job=job,
        cron_schedule=REFRESH_CRON,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description="Daily at 00:10 UTC: brings the batch view up to yesterday without a manual step.",
    )
    def batch_daily_refresh_schedule(context: ScheduleEvaluationContext) -> RunRequest:
        moment = context.scheduled_execution_time or datetime.now(UTC)
        day = moment.astimezone(UTC).date()
        first, last = refresh_months(day, first_month)
        return RunRequest(
            run_key=f"batch-refresh-{day.isoformat()}",
            tags={RANGE_START_TAG: first.start.isoformat(), RANGE_END_TAG: last.start.isoformat()},
        )

    return job, batch_daily_refresh_schedule
