"""Data quality as every layer reports it: a check's outcome (pass or fail, severity, description, metadata),
its declaration (name, description and how it is judged, in one place), and the Dagster check specs and results
made from them, with the window each result judged.

Assets declare their checks as a tuple of :class:`Check`; the asset's ``check_specs`` and the results its body
returns both come from that tuple (:func:`check_specs`, :func:`check_results`), so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

# At most this many symbols are named: with 50 a full list buries the one that matters, so callers put the
# worst first and the rest are counted.
MAX_LISTED = 10


def truncated(items: Sequence[str], limit: int = MAX_LISTED) -> list[str]:
    """The first ``limit`` items, then "… and N more" if there were more."""
    if len(items) <= limit:
        return list(items)
    return [*items[:limit], f"… and {len(items) - limit} more"]


class Severity(str, Enum):
    ERROR = "ERROR"
    WARN = "WARN"


@dataclass
class CheckOutcome:
    passed: bool
    description: str
    severity: Severity = Severity.ERROR
    metadata: dict[str, object] = field(default_factory=dict)


def combine(*outcomes: CheckOutcome) -> CheckOutcome:
    """Several conditions reported as one check: passes when all pass, metadata merged."""
    failed = [o for o in outcomes if not o.passed]
    merged: dict[str, object] = {}
    for outcome in outcomes:
        merged.update(outcome.metadata)
    return CheckOutcome(
        not failed,
        "; ".join(o.description for o in (failed or outcomes)),
        max((o.severity for o in failed), key=lambda s: s == Severity.ERROR, default=Severity.ERROR),
        merged,
    )


def add_up(outcomes: list[CheckOutcome]) -> CheckOutcome:
    """One condition judged on disjoint parts of a dataset (e.g. symbol by symbol), reported as on the whole:
    passes when every part passes; counts are summed; the description and other metadata are those of the
    first failing part (else the first part)."""
    if not outcomes:
        raise ValueError("no outcomes to add up")
    failed = [o for o in outcomes if not o.passed]
    shown = (failed or outcomes)[0]
    metadata = {
        key: sum(o.metadata.get(key, 0) for o in outcomes)
        if isinstance(value, int) and not isinstance(value, bool)
        else value
        for key, value in shown.metadata.items()
    }
    return CheckOutcome(not failed, shown.description, shown.severity, metadata)


def markdown_table(frame: pl.DataFrame, rows: int = 10) -> str:
    head = frame.head(rows)
    if head.width == 0:
        return "_empty_"
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * head.width]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in head.iter_rows()]
    return "\n".join(lines)


def as_metadata(values: dict[str, object]) -> dict[str, object]:
    """Dagster metadata from plain values: a markdown table (text starting with "|") is shown as one."""
    return {k: MetadataValue.md(v) if isinstance(v, str) and v.startswith("|") else v for k, v in values.items()}


def to_check_result(
    check_name: str, outcome: CheckOutcome, window: dict[str, object] | None = None
) -> AssetCheckResult:
    """``window`` (:func:`check_window`) says which months and symbols the check judged."""
    return AssetCheckResult(
        check_name=check_name,
        passed=outcome.passed,
        severity=AssetCheckSeverity.WARN if outcome.severity == Severity.WARN else AssetCheckSeverity.ERROR,
        description=outcome.description,
        metadata=as_metadata(outcome.metadata) | (window or {}),
    )


def check_window(months: str, symbols: list[str]) -> dict[str, object]:
    """What a check judged, for its metadata: a check's status is that of its last run, which may have covered
    fewer months or symbols than the asset holds."""
    named = ", ".join(truncated(symbols)) + (f" ({len(symbols)} symbols)" if len(symbols) > MAX_LISTED else "")
    return {"judged_window": MetadataValue.text(months), "judged_symbols": MetadataValue.text(named)}


Judged = TypeVar("Judged")


@dataclass(frozen=True)
class Check(Generic[Judged]):
    """One asset check: its name, what it promises, and how it judges what the asset's step produced."""

    name: str
    description: str
    judge: Callable[[Judged], CheckOutcome]

    def spec(self, asset: str) -> AssetCheckSpec:
        return AssetCheckSpec(self.name, asset=asset, description=self.description)


def check_specs(asset: str, checks: Sequence[Check]) -> list[AssetCheckSpec]:
    return [check.spec(asset) for check in checks]


def check_results(
    checks: Sequence[Check[Judged]],
    judged_input: Judged,
    window: dict[str, object] | None = None,
    selected: Collection[str] | None = None,
) -> list[AssetCheckResult]:
    """Each declared check judged on ``judged_input`` (only the ``selected`` names, when given)."""
    return [
        to_check_result(check.name, check.judge(judged_input), window)
        for check in checks
        if selected is None or check.name in selected
    ]
