"""Asset checks on the CV metrics, as pure functions returning the batch layer's CheckOutcome."""

from __future__ import annotations

import polars as pl

from crypto_assets.batch.checks import CheckOutcome, Severity
from crypto_assets.forecast.baselines import NAIVE
from crypto_assets.forecast.candidates import LABELS, PROPHET
from crypto_assets.forecast.evaluation import level_tag


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
    """WARN when Prophet's CV MAPE is above the naive baseline's at any horizon; lists each horizon."""
    model, naive = _mape(metrics, PROPHET), _mape(metrics, NAIVE)
    horizons = sorted(set(model) & set(naive))
    worse = [h for h in horizons if model[h] > naive[h]]
    lines = ["| horizon | prophet MAPE | naive MAPE | skill | worse than naive |", "|---|---|---|---|---|"]
    for h in horizons:
        skill = 1.0 - model[h] / naive[h] if naive[h] > 0 else float("nan")
        lines.append(f"| {h}d | {model[h]:.2%} | {naive[h]:.2%} | {skill:+.3f} | {'yes' if h in worse else 'no'} |")
    metadata: dict[str, object] = {f"worse_than_naive_{h}d": h in worse for h in horizons}
    metadata["per_horizon"] = "\n".join(lines)
    if not horizons:
        return CheckOutcome(False, "no Prophet and naive CV metrics to compare", Severity.WARN, metadata)
    description = (
        "Prophet's MAPE is at or below naive's at every horizon"
        if not worse
        else "Prophet is worse than naive at " + ", ".join(f"{h}d" for h in worse)
    )
    return CheckOutcome(not worse, description, Severity.WARN, metadata)


def interval_coverage(
    metrics: pl.DataFrame, horizons: tuple[int, ...], levels: tuple[float, ...], tolerance: float
) -> CheckOutcome:
    """WARN when the served intervals' honest CV coverage is more than ``tolerance`` from its level at any horizon."""
    lines = [
        "| horizon | served | level | CV coverage | origins scored | off by more than tolerance |",
        "|---|---|---|---|---|---|",
    ]
    off = []
    for h in horizons:
        model = _served(metrics, h)
        row = (
            metrics.filter((pl.col("model") == model) & (pl.col("horizon") == h)).row(0, named=True) if model else None
        )
        for level in levels:
            cov = None if row is None else row.get(f"coverage_{level_tag(level)}")
            bad = cov is None or cov != cov or abs(cov - level) > tolerance
            if bad:
                off.append(f"{h}d at {level:.0%}")
            shown = "n/a" if cov is None or cov != cov else f"{cov:.1%}"
            lines.append(
                f"| {h}d | {LABELS.get(model, model)} | {level:.0%} | {shown} | {row['coverage_n'] if row else 0} | {'yes' if bad else 'no'} |"
            )
    description = (
        f"served intervals cover within {tolerance:.0%} of their level at every horizon"
        if not off
        else "served interval coverage is off (or not measurable) at " + ", ".join(off)
    )
    return CheckOutcome(not off, description, Severity.WARN, {"per_horizon": "\n".join(lines), "tolerance": tolerance})
