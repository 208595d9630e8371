"""Asset checks on the CV metrics, as pure functions returning the batch layer's CheckOutcome."""

from __future__ import annotations

import math

import polars as pl

from crypto_assets.forecast.baselines import NAIVE
from crypto_assets.forecast.candidates import LABELS, PROPHET
from crypto_assets.forecast.evaluation import level_tag
from crypto_assets.quality import CheckOutcome, Severity

Z_95 = 1.96  # two-sided 95% normal quantile


def _mape(metrics: pl.DataFrame, model: str) -> dict[int, float]:
    rows = metrics.filter(pl.col("model") == model).select("horizon", "mape")
    return {int(h): float(m) for h, m in rows.iter_rows()}


def _served(metrics: pl.DataFrame, horizon: int) -> str | None:
    if "served" not in metrics.columns:
        return None
    rows = metrics.filter(pl.col("served") & (pl.col("horizon") == horizon))
    return str(rows["model"][0]) if rows.height else None


def mape_below_threshold(metrics: pl.DataFrame, threshold: float, horizon: int = 1) -> CheckOutcome:
    """WARN when the served model's CV MAPE at ``horizon`` days exceeds ``threshold`` (a fraction: 0.05 = 5%).

    The served model is the champion of that horizon (Prophet when the metrics name no champion)."""
    model = _served(metrics, horizon) or PROPHET
    label = LABELS.get(model, model)
    mape = _mape(metrics, model).get(horizon)
    if mape is None:
        return CheckOutcome(
            False,
            f"no {label} CV metrics at a {horizon}-day horizon",
            Severity.WARN,
            {"threshold": threshold},
        )
    passed = mape <= threshold
    verdict = "within" if passed else "above"
    return CheckOutcome(
        passed,
        f"served {label} {horizon}-day MAPE {mape:.2%} is {verdict} the {threshold:.2%} threshold",
        Severity.WARN,
        {"mape": mape, "threshold": threshold, "horizon_days": horizon},
    )


def not_worse_than_naive(metrics: pl.DataFrame) -> CheckOutcome:
    """WARN when the served forecast's CV MAPE is above the naive baseline's at any horizon.

    The served model is the champion of each horizon; Prophet's own comparison with naive is in the metadata and
    the description, since a Prophet that loses to naive is shown beside the forecast but not served."""
    naive = _mape(metrics, NAIVE)
    prophet = _mape(metrics, PROPHET)
    horizons = sorted(naive)
    served = {h: _served(metrics, h) or PROPHET for h in horizons}
    served_mape = {h: _mape(metrics, served[h]).get(h) for h in horizons}
    worse = [h for h in horizons if served_mape[h] is None or served_mape[h] > naive[h]]
    prophet_worse = [h for h in horizons if h in prophet and prophet[h] > naive[h]]
    lines = [
        "| horizon | served | served MAPE | naive MAPE | Prophet MAPE | served worse than naive |",
        "|---|---|---|---|---|---|",
    ]
    for h in horizons:
        shown = "n/a" if served_mape[h] is None else f"{served_mape[h]:.2%}"
        lines.append(
            f"| {h}d | {LABELS.get(served[h], served[h])} | {shown} | {naive[h]:.2%} | "
            f"{f'{prophet[h]:.2%}' if h in prophet else 'n/a'} | {'yes' if h in worse else 'no'} |"
        )
    metadata: dict[str, object] = {f"worse_than_naive_{h}d": h in worse for h in horizons}
    metadata["prophet_worse_than_naive"] = ", ".join(f"{h}d" for h in prophet_worse) or "none"
    metadata["per_horizon"] = "\n".join(lines)
    if not horizons:
        return CheckOutcome(False, "no naive CV metrics to compare with", Severity.WARN, metadata)
    description = (
        "the served forecast's MAPE is at or below naive's at every horizon"
        if not worse
        else "the served forecast is worse than naive at " + ", ".join(f"{h}d" for h in worse)
    )
    if prophet_worse:
        description += "; Prophet, shown beside it, loses to naive at " + ", ".join(f"{h}d" for h in prophet_worse)
    return CheckOutcome(not worse, description, Severity.WARN, metadata)


def interval_coverage(
    metrics: pl.DataFrame, horizons: tuple[int, ...], levels: tuple[float, ...], tolerance: float
) -> CheckOutcome:
    """WARN when the served intervals' honest CV coverage is off its level at any horizon by more than
    ``tolerance`` plus the sampling noise of the origins scored (1.96 binomial standard errors): on a few dozen
    origins a correct 80% band measures anywhere from ~70% to ~90%, and calling that "off" would mislead."""
    lines = [
        "| horizon | served | level | CV coverage | origins scored | allowed gap | off |",
        "|---|---|---|---|---|---|---|",
    ]
    off = []
    for h in horizons:
        model = _served(metrics, h)
        row = (
            metrics.filter((pl.col("model") == model) & (pl.col("horizon") == h)).row(0, named=True) if model else None
        )
        for level in levels:
            cov = None if row is None else row.get(f"coverage_{level_tag(level)}")
            scored = int(row["coverage_n"]) if row and row.get("coverage_n") else 0
            allowed = tolerance + (Z_95 * math.sqrt(level * (1 - level) / scored) if scored else math.inf)
            bad = cov is None or cov != cov or abs(cov - level) > allowed
            if bad:
                off.append(f"{h}d at {level:.0%}")
            shown = "n/a" if cov is None or cov != cov else f"{cov:.1%}"
            lines.append(
                f"| {h}d | {LABELS.get(model, model)} | {level:.0%} | {shown} | {scored} | {allowed:.1%} | {'yes' if bad else 'no'} |"
            )
    description = (
        f"served intervals cover within {tolerance:.0%} (plus sampling noise) of their level at every horizon"
        if not off
        else "served interval coverage is off (or not measurable) at " + ", ".join(off)
    )
    return CheckOutcome(not off, description, Severity.WARN, {"per_horizon": "\n".join(lines), "tolerance": tolerance})
