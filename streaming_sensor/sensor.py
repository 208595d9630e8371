"""The sensor that refreshes ``unified_view`` when the stream commits micro-batches.

It reads only the micro-batch log (``read_records`` after its cursor), never Kafka, and returns at once:
a run request per symbol partition when new batches landed, a skip reason otherwise. The JSON cursor keeps
the newest batch id seen and, per symbol, the batch id its last run was requested for; a symbol whose
previous run is still going is asked for again on a later tick instead of piling up runs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dagster import (
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

from crypto_assets.lake.microbatch_log import latest_batch_id, read_records
from crypto_assets.settings import Settings

SENSOR_NAME = "unified_view_on_new_microbatches"
UNIFIED_VIEW = AssetKey("unified_view")
UNFINISHED = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


@dataclass
class Cursor:
    last_batch_id: int | None = None  # newest logged batch seen
    requested: dict[str, int] = field(default_factory=dict)  # symbol -> batch id of its last requested run

    @classmethod
    def parse(cls, raw: str | None) -> Cursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(data.get("last_batch_id"), {str(k): int(v) for k, v in data.get("requested", {}).items()})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def read_from(self, symbols: list[str]) -> int | None:
        """Read the log after the oldest batch some symbol has not been refreshed for."""
        if any(s not in self.requested for s in symbols):
            return None
        return min(self.requested[s] for s in symbols)


def _run_in_flight(context: SensorEvaluationContext, symbol: str) -> bool:
    runs = context.instance.get_run_records(
        RunsFilter(statuses=UNFINISHED, tags={"dagster/sensor_name": SENSOR_NAME, "dagster/partition": symbol}), limit=1
    )
    return bool(runs)


def evaluate(context: SensorEvaluationContext, lake: Path, symbols: list[str]) -> SensorResult | SkipReason:
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

    requests, waiting = [], []
    for symbol in symbols:
        if cursor.requested.get(symbol, -1) >= newest:
            continue
        if _run_in_flight(context, symbol):
            waiting.append(symbol)
            continue
        requests.append(
            RunRequest(run_key=f"{symbol}:{newest}", partition_key=symbol, asset_selection=[UNIFIED_VIEW])
        )
        cursor.requested[symbol] = newest
    cursor.last_batch_id = max(newest, cursor.last_batch_id or -1)
    context.log.info(
        f"{len(records)} new micro-batch(es) up to batch {newest}"
        + (f"; refreshing {', '.join(r.partition_key for r in requests)}" if requests else "")
        + (f"; {', '.join(waiting)} still refreshing, asked again on a later tick" if waiting else "")
    )
    if not requests:
        return SensorResult(skip_reason=SkipReason(f"previous runs still going for {', '.join(waiting)}"), cursor=cursor.to_json())
    return SensorResult(run_requests=requests, cursor=cursor.to_json())


def build_unified_view_sensor(settings: Settings) -> SensorDefinition:
    lake, symbols = settings.lake_dir, settings.symbol_names

    @sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=settings.serving.sensor_min_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        asset_selection=[UNIFIED_VIEW],
        description="Requests a unified_view run per symbol when the speed layer commits new micro-batches "
        "(reads the micro-batch log under <lake>/speed/_log; never polls Kafka).",
    )
    def unified_view_on_new_microbatches(context: SensorEvaluationContext):
        return evaluate(context, lake, symbols)

    return unified_view_on_new_microbatches
