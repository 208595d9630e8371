"""Freshness policies: when the Dagster UI turns an asset red because nothing refreshed it in time.

Dagster's daemon (``dagster-daemon run``) evaluates them every 30 seconds against each asset's last
materialization, so a stalled stream or a batch day that never arrived shows without any run. Both windows
come from the settings, here only:

* ``unified_view`` fails after ``[serving] stale_minutes`` without a refresh. Its sensor refreshes it only
  when the stream logs micro-batches, so a stall of the stream (or of the sensor, or failing refreshes) turns it
  red within minutes.
* the batch view (``daily_raw``, ``daily_filled``) warns after a missed daily refresh (00:10 UTC) and fails
  after ``[checks] freshness_hours``, the window the ``daily_raw.fresh`` check judges the data by.
"""

from __future__ import annotations

from datetime import timedelta

from dagster import FreshnessPolicy

from crypto_assets.settings import Settings

# The daily refresh runs at 00:10 UTC; two hours past a day is one missed refresh, with time for the run itself.
MISSED_DAILY_REFRESH = timedelta(hours=26)


def serving_freshness(settings: Settings) -> FreshnessPolicy:
    return FreshnessPolicy.time_window(fail_window=timedelta(minutes=settings.serving.stale_minutes))


def batch_freshness(settings: Settings) -> FreshnessPolicy:
    fail = timedelta(hours=settings.freshness_hours)
    return FreshnessPolicy.time_window(
        fail_window=fail, warn_window=MISSED_DAILY_REFRESH if MISSED_DAILY_REFRESH < fail else None
    )
