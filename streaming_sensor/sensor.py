"""The sensor that refreshes ``unified_view`` when the stream commits micro-batches.

It reads only the micro-batch log (``read_records`` after its cursor), never Kafka, and returns at once: one
run per tick for every symbol with new micro-batches (a single-run range over the symbol partitions), a skip
reason otherwise. The JSON cursor keeps the newest batch id seen and, per symbol, the batch id its last run
was requested for, and when it last asked for the view's checks: a routine refresh evaluates them at most every
``[serving] view_check_minutes``, since Dagster keeps every check result for good; while the previous refresh is still going no new run is requested (the symbols are asked
for again on a later tick), so runs never pile up. Its runs carry ``REFRESH_TAG`` so the Runs page can show
or hide them in one click.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dagster import (
    AssetCheckKey,
    AssetKey,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from crypto_assets.asset_names import UNIFIED_VIEW as UNIFIED_VIEW_NAME
from crypto_assets.lake.microbatch_log import latest_batch_id, read_records
from crypto_assets.serving.refresh_runs import (
    REFRESH_MAX_RUNTIME_SECONDS,
    REFRESH_RUN_TAGS,
    REFRESH_TAG,
    SENSOR_NAME_TAG,
)
from crypto_assets.serving.refresh_runs import SPEED_REFRESH_SENSOR as SENSOR_NAME
from crypto_assets.settings import Settings

UNIFIED_VIEW = AssetKey(UNIFIED_VIEW_NAME)
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
UNFINISHED = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


@dataclass
class Cursor:
    last_batch_id: int | None = None  # newest logged batch seen
    requested: dict[str, int] = field(default_factory=dict)  # symbol -> batch id of its last requested run
    checked_at: float | None = None  # epoch seconds of the last run requested with the view's checks

    @classmethod
    def parse(cls, raw: str | None) -> Cursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        requested = {str(k): int(v) for k, v in data.get("requested", {}).items()}
        return cls(data.get("last_batch_id"), requested, data.get("checked_at"))

    def checks_due(self, now: float, every: timedelta) -> bool:
        return self.checked_at is None or now - self.checked_at >= every.total_seconds()

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def read_from(self, symbols: list[str]) -> int | None:
        """Read the log after the oldest batch some symbol has not been refreshed for."""
        if any(s not in self.requested for s in symbols):
            return None
        return min(self.requested[s] for s in symbols)


def _run_in_flight(context: SensorEvaluationContext) -> bool:
    """An unfinished refresh younger than its maximum runtime; an older one lost its run worker (run monitoring
    fails it), and waiting for it would stop the view for good."""
    since = datetime.now(UTC) - timedelta(seconds=REFRESH_MAX_RUNTIME_SECONDS)
    runs = context.instance.get_run_records(
        RunsFilter(statuses=UNFINISHED, tags={SENSOR_NAME_TAG: SENSOR_NAME}, created_after=since), limit=1
    )
    return bool(runs)


def refresh_request(symbols: list[str], stale: list[str], newest: int, with_checks: bool = True) -> RunRequest:
    """One run for the stale symbols: the range of symbol partitions from the first to the last of them (any
    symbol between is refreshed too, which is harmless: a refresh is idempotent). Without checks, the run
    selects none of the view's checks (``asset_check_keys=[]``)."""
    ordered = [s for s in symbols if s in stale]
    first, last = ordered[0], ordered[-1]
    tags = {REFRESH_TAG[0]: REFRESH_TAG[1], **REFRESH_RUN_TAGS}
    checks: list[AssetCheckKey] | None = None if with_checks else []
    if first == last:
        return RunRequest(
            run_key=f"{first}:{newest}",
            partition_key=first,
            asset_selection=[UNIFIED_VIEW],
            asset_check_keys=checks,
            tags=tags,
        )
    return RunRequest(
        run_key=f"{first}..{last}:{newest}",
        asset_selection=[UNIFIED_VIEW],
        asset_check_keys=checks,
        tags=tags | {RANGE_START_TAG: first, RANGE_END_TAG: last},
    )


def evaluate(
    context: SensorEvaluationContext,
    lake: Path,
    symbols: list[str],
    check_every: timedelta = timedelta(0),
    now: float | None = None,
) -> SensorResult | SkipReason:
    cursor = Cursor.parse(context.cursor)
    newest_logged = latest_batch_id(lake)
    if newest_logged is None:
        return SkipReason(f"no micro-batch logged yet under {lake / 'speed' / '_log'}")
    if cursor.last_batch_id is not None and newest_logged < cursor.last_batch_id:
        context.log.info(f"the micro-batch log restarted at batch {newest_logged}; reading it from the start")
        cursor = Cursor()
    records = read_records(lake, cursor.read_from(symbols))
    newest = records[-1].batch_id if records else None
    if newest is None or all(cursor.requested.get(s, -1) >= newest for s in symbols):
        return SkipReason(f"no new micro-batch after batch {cursor.last_batch_id}")

    stale = [s for s in symbols if cursor.requested.get(s, -1) < newest]
    if _run_in_flight(context):
        return SkipReason(f"the previous refresh is still going; {', '.join(stale)} asked for again on a later tick")
    now = time.time() if now is None else now
    with_checks = cursor.checks_due(now, check_every)
    request = refresh_request(symbols, stale, newest, with_checks)
    if with_checks:
        cursor.checked_at = now
    for symbol in stale:
        cursor.requested[symbol] = newest
    cursor.last_batch_id = max(newest, cursor.last_batch_id or -1)
    context.log.info(
        f"{len(records)} new micro-batch(es) up to batch {newest}; refreshing {', '.join(stale)} in one run"
        + ("" if with_checks else " (its checks are evaluated on a later refresh)")
    )
    return SensorResult(run_requests=[request], cursor=cursor.to_json())


def build_unified_view_sensor(settings: Settings) -> SensorDefinition:
    lake, symbols = settings.lake_dir, settings.symbol_names
    check_every = timedelta(minutes=settings.serving.view_check_minutes)

    @sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=settings.serving.sensor_min_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        asset_selection=[UNIFIED_VIEW],
        description="Requests one unified_view run for every symbol with new micro-batches when the speed layer "
        "commits some (reads the micro-batch log under <lake>/speed/_log; never polls Kafka). Its runs are "
        "tagged crypto-assets/refresh=speed. They evaluate the view's checks at most every "
        f"{settings.serving.view_check_minutes} minute(s) ([serving] view_check_minutes).",
    )
    def unified_view_on_new_microbatches(context: SensorEvaluationContext):
        return evaluate(context, lake, symbols, check_every)

    return unified_view_on_new_microbatches
