"""Asset checks on the CV metrics, as pure functions returning the batch layer's CheckOutcome."""

from __future__ import annotations

import polars as pl

from crypto_assets.batch.checks import CheckOutcome, Severity
from crypto_assets.forecast.baselines import NAIVE
from crypto_assets.forecast.cross_validation import PROPHET


def _mape(metrics: pl.DataFrame, model: str) -> dict[int, float]:
    rows = metrics.filter(pl.col("model") == model).select("horizon", "mape")
    return {int(h): float(m) for h, m in rows.iter_rows()}


def mape_below_threshold(metrics: pl.DataFrame, threshold: float, horizon: int = 1) -> CheckOutcome:
    """WARN when Prophet's CV MAPE at ``horizon`` days exceeds ``threshold`` (a fraction: 0.05 = 5%)."""
    mape = _mape(metrics, PROPHET).get(horizon)
    if mape is None:
        return CheckOutcome(
            False, f"no Prophet CV metrics at a {horizon}-day horizon", Severity.WARN,
            {"threshold": threshold},
        )  # fmt: skip
    passed = mape <= threshold
    verdict = "within" if passed else "above"
    return CheckOutcome(
        passed,
        f"Prophet {horizon}-day MAPE {mape:.2%} is {verdict} the {threshold:.2%} threshold",
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
        lines.append(
            f"| {h}d | {model[h]:.2%} | {naive[h]:.2%} | {skill:+.3f} | {'yes' if h in worse else 'no'} |"
        )
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
