"""Per-symbol interactive HTML report and a markdown summary of the CV skill table."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from crypto_assets.forecast.candidates import LABELS
from crypto_assets.lake.atomic import write_text_atomic

MODEL_ORDER = ("prophet", "naive", "drift", "auto_ets", "auto_arima")
COLORS = {
    "prophet": "#1f77b4",
    "naive": "#7f7f7f",
    "drift": "#ff7f0e",
    "auto_ets": "#2ca02c",
    "auto_arima": "#9467bd",
    "served": "#d62728",
}
BACKTEST_HORIZONS = (1, 7, 30)


def _for_symbol(df: pl.DataFrame, symbol: str) -> pl.DataFrame:
    return df.filter(pl.col("symbol") == symbol) if "symbol" in df.columns else df


def _line(fig: go.Figure, row: int, x, y, name: str, **line) -> None:
    fig.add_trace(go.Scatter(x=x, y=y, name=name, mode="lines", line=line), row=row, col=1)


def _band(fig: go.Figure, served: pl.DataFrame, tag: str, alpha: float) -> None:
    x = served["ds"].to_list()
    fig.add_trace(
        go.Scatter(
            x=x,
            y=served[f"upper_{tag}"].to_list(),
            line={"width": 0},
            showlegend=False,
            hoverinfo="x+y",
            name=f"upper {tag}%",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=served[f"lower_{tag}"].to_list(),
            fill="tonexty",
            fillcolor=f"rgba(214,39,40,{alpha})",
            line={"width": 0},
            name=f"{tag}% interval",
        ),
        row=1,
        col=1,
    )


def _served_label(served: pl.DataFrame) -> str:
    spans = []
    for (model,), part in served.partition_by("model", as_dict=True, maintain_order=True).items():
        spans.append(f"{LABELS.get(model, model)} days {part['horizon'].min()}-{part['horizon'].max()}")
    return "served: " + ", ".join(spans)


def _forecast_panel(fig: go.Figure, daily: pl.DataFrame, forecasts: pl.DataFrame, recent_days: int) -> None:
    recent = daily.tail(recent_days)
    _line(fig, 1, recent["date"].to_list(), recent["close"].to_list(), "close", color="#222")
    served = forecasts.filter(pl.col("served")).sort("horizon")
    for tag, alpha in (("95", 0.12), ("80", 0.25)):
        if f"lower_{tag}" in served.columns:
            _band(fig, served, tag, alpha)
    _line(
        fig,
        1,
        served["ds"].to_list(),
        served["yhat"].to_list(),
        _served_label(served),
        color=COLORS["served"],
        width=2.5,
    )
    for model, dash in (("prophet", "dash"), ("naive", "dot")):
        path = forecasts.filter(pl.col("model") == model).sort("horizon")
        if path.height:
            _line(fig, 1, path["ds"].to_list(), path["yhat"].to_list(), LABELS[model], color=COLORS[model], dash=dash)


def _backtest_panel(fig: go.Figure, daily: pl.DataFrame, predictions: pl.DataFrame, metrics: pl.DataFrame) -> None:
    if predictions.height == 0:
        return
    first = predictions["cutoff"].min()
    actual = daily.filter(pl.col("date") >= first)
    _line(fig, 2, actual["date"].to_list(), actual["close"].to_list(), "actual (CV period)", color="#222", width=1)
    served = {(int(h), str(m)) for m, h in metrics.filter(pl.col("served")).select("model", "horizon").iter_rows()}
    symbols = {1: "circle", 7: "diamond", 30: "x"}
    for h in BACKTEST_HORIZONS:
        model = next((m for hh, m in served if hh == h), None)
        rows = (
            predictions.filter((pl.col("horizon") == h) & (pl.col("model") == model)).sort("ds")
            if model
            else predictions.clear()
        )
        if rows.height:
            fig.add_trace(
                go.Scatter(
                    x=rows["ds"].to_list(),
                    y=rows["yhat"].to_list(),
                    mode="markers",
                    name=f"predicted {h}d ahead ({LABELS.get(model, model)})",
                    marker={"symbol": symbols.get(h, "circle"), "size": 6},
                ),
                row=2,
                col=1,
            )


def skill_rows(metrics: pl.DataFrame, horizons: Sequence[int] = BACKTEST_HORIZONS) -> list[list[str]]:
    """horizon, model, MAPE, skill [95% bootstrap interval], coverage 80/95, served; one row per (horizon, model)."""
    order = {m: i for i, m in enumerate(MODEL_ORDER)}
    rows = []
    m = metrics.filter(pl.col("horizon").is_in(list(horizons)))
    for r in sorted(m.iter_rows(named=True), key=lambda r: (r["horizon"], order.get(r["model"], 99))):
        rows.append(
            [
                f"{r['horizon']}d",
                LABELS.get(r["model"], r["model"]),
                _pct(r["mape"]),
                _skill(r["skill"], r.get("skill_lo"), r.get("skill_hi")),
                _pct(r.get("coverage_80")),
                _pct(r.get("coverage_95")),
                "served" if r.get("served") else "",
            ]
        )
    return rows


SKILL_HEADER = ["horizon", "model", "CV MAPE", "skill vs naive [95% CI]", "80% coverage", "95% coverage", ""]


def forecast_figure(
    symbol: str,
    daily_filled: pl.DataFrame,
    forecasts: pl.DataFrame,
    metrics: pl.DataFrame,
    predictions: pl.DataFrame,
    *,
    recent_days: int = 365,
) -> go.Figure:
    """Three panels: history with the served forecast and its bands, Prophet and naive; the CV backtest (actual vs
    the served predictions at 1/7/30 days); the skill table."""
    daily = _for_symbol(daily_filled, symbol).sort("date")
    fc = _for_symbol(forecasts, symbol)
    m = _for_symbol(metrics, symbol)
    fig = make_subplots(
        rows=3,
        cols=1,
        vertical_spacing=0.07,
        row_heights=[0.42, 0.33, 0.25],
        specs=[[{"type": "xy"}], [{"type": "xy"}], [{"type": "table"}]],
        subplot_titles=(
            f"{symbol}: last {recent_days} days and the next {fc['horizon'].max()} (served = champion per horizon by CV)",
            "Cross-validation backtest: actual close vs the served model's prediction at 1, 7 and 30 days ahead",
            "Skill against naive (tomorrow = today) on the CV origins",
        ),
    )
    _forecast_panel(fig, daily, fc, recent_days)
    _backtest_panel(fig, daily, _for_symbol(predictions, symbol), m)
    rows = skill_rows(m)
    fig.add_trace(
        go.Table(
            header={"values": SKILL_HEADER},
            cells={"values": [list(c) for c in zip(*rows, strict=False)] if rows else [[]] * 7},
        ),
        row=3,
        col=1,
    )
    fig.update_yaxes(title_text="price", row=1, col=1)
    fig.update_yaxes(title_text="price", row=2, col=1)
    fig.update_layout(height=1300, title=f"{symbol} forecast report", hovermode="x unified")
    return fig


def write_html(fig: go.Figure, path: str | os.PathLike[str]) -> Path:
    """Standalone HTML with plotly.js inlined: viewable with no network."""
    target = Path(path)
    write_text_atomic(fig.to_html(include_plotlyjs=True, full_html=True), target)
    return target


def write_forecast_chart(
    path: str | os.PathLike[str],
    symbol: str,
    daily_filled: pl.DataFrame,
    forecasts: pl.DataFrame,
    metrics: pl.DataFrame,
    predictions: pl.DataFrame,
) -> Path:
    return write_html(forecast_figure(symbol, daily_filled, forecasts, metrics, predictions), path)


def _pct(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value * 100:.2f}%"


def _skill(value: float | None, lo: float | None, hi: float | None) -> str:
    if value is None or value != value:
        return "n/a"
    if lo is None or hi is None or lo != lo or hi != hi:
        return f"{value:+.3f}"
    return f"{value:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def metrics_markdown(
    metrics: pl.DataFrame, symbol: str | None = None, horizons: Sequence[int] = BACKTEST_HORIZONS
) -> str:
    """Markdown skill table: one row per (horizon, model) with MAPE, skill and its bootstrap interval, coverage."""
    m = _for_symbol(metrics, symbol) if symbol else metrics
    if "symbol" in m.columns and m["symbol"].n_unique() > 1:
        raise ValueError("metrics hold several symbols; pass symbol=")
    lines = ["| " + " | ".join(h or "served" for h in SKILL_HEADER) + " |", "|" + "---|" * len(SKILL_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in skill_rows(m, horizons)]
    return "\n".join(lines)
