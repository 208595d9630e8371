"""Per-symbol interactive HTML report and a markdown summary of CV metrics."""

from __future__ import annotations

import os
from pathlib import Path

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from crypto_assets.lake.atomic import write_text_atomic

MODEL_ORDER = ("prophet", "naive", "drift")
COLORS = {"prophet": "#1f77b4", "naive": "#7f7f7f", "drift": "#ff7f0e"}


def _for_symbol(df: pl.DataFrame, symbol: str) -> pl.DataFrame:
    return df.filter(pl.col("symbol") == symbol) if "symbol" in df.columns else df


def _price_panel(fig: go.Figure, daily: pl.DataFrame) -> None:
    x = daily["date"].to_list()
    fig.add_trace(
        go.Scatter(x=x, y=daily["close"].to_list(), name="close", line={"color": "#222"}),
        row=1,
        col=1,
    )
    for col, color in (("ma7", "#2ca02c"), ("ma30", "#d62728")):
        fig.add_trace(
            go.Scatter(
                x=x, y=daily[col].to_list(), name=col.upper(), line={"color": color, "width": 1}
            ),
            row=1,
            col=1,
        )
    filled = daily.filter(pl.col("is_filled"))
    if filled.height:
        # Days reconstructed by the filler rather than traded: worth seeing.
        fig.add_trace(
            go.Scatter(
                x=filled["date"].to_list(),
                y=filled["close"].to_list(),
                mode="markers",
                name="filled day",
                marker={"color": "#9467bd", "size": 5},
            ),
            row=1,
            col=1,
        )


def _forecast_panel(
    fig: go.Figure, daily: pl.DataFrame, fc: pl.DataFrame, recent_days: int
) -> None:
    recent = daily.tail(recent_days)
    fig.add_trace(
        go.Scatter(
            x=recent["date"].to_list(),
            y=recent["close"].to_list(),
            name="actual",
            line={"color": "#222"},
            showlegend=False,
        ),
        row=2,
        col=1,
    )
    x = fc["ds"].to_list()
    # Upper bound first (invisible), then lower filled up to it: the shaded band.
    fig.add_trace(
        go.Scatter(
            x=x,
            y=fc["yhat_upper"].to_list(),
            line={"width": 0},
            hoverinfo="x+y",
            name="upper",
            showlegend=False,
        ),
        row=2,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=fc["yhat_lower"].to_list(),
            fill="tonexty",
            fillcolor="rgba(31,119,180,0.2)",
            line={"width": 0},
            name="interval",
        ),
        row=2,
        col=1,
    )
    fig.add_trace(
        go.Scatter(x=x, y=fc["yhat"].to_list(), name="forecast", line={"color": COLORS["prophet"]}),
        row=2,
        col=1,
    )


def _cv_panel(fig: go.Figure, metrics: pl.DataFrame) -> None:
    for model in MODEL_ORDER:
        m = metrics.filter(pl.col("model") == model).sort("horizon")
        if m.height == 0:
            continue
        fig.add_trace(
            go.Bar(
                x=[f"{h}d" for h in m["horizon"]],
                y=(m["mape"] * 100).to_list(),
                name=f"{model} MAPE",
                marker={"color": COLORS[model]},
            ),
            row=3,
            col=1,
        )


def forecast_figure(
    symbol: str,
    daily_filled: pl.DataFrame,
    forecast: pl.DataFrame,
    metrics: pl.DataFrame,
    *,
    recent_days: int = 365,
) -> go.Figure:
    """Three panels: price with MA7/MA30; forecast with interval; CV MAPE by horizon."""
    daily = _for_symbol(daily_filled, symbol).sort("date")
    fc = _for_symbol(forecast, symbol).sort("ds")
    if "is_forecast" in fc.columns:
        fc = fc.filter(pl.col("is_forecast"))
    fig = make_subplots(
        rows=3,
        cols=1,
        vertical_spacing=0.08,
        row_heights=[0.4, 0.35, 0.25],
        subplot_titles=(
            f"{symbol} daily close with MA7 / MA30",
            f"Forecast, next {fc.height} days (last {recent_days} days of actuals)",
            "Cross-validation MAPE by horizon (%)",
        ),
    )
    _price_panel(fig, daily)
    _forecast_panel(fig, daily, fc, recent_days)
    _cv_panel(fig, _for_symbol(metrics, symbol))
    fig.update_yaxes(type="log", title_text="price", row=1, col=1)
    fig.update_yaxes(title_text="price", row=2, col=1)
    fig.update_yaxes(title_text="MAPE %", row=3, col=1)
    fig.update_xaxes(title_text="horizon", row=3, col=1)
    fig.update_layout(
        height=1100, barmode="group", title=f"{symbol} forecast report", hovermode="x unified"
    )
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
    forecast: pl.DataFrame,
    metrics: pl.DataFrame,
) -> Path:
    return write_html(forecast_figure(symbol, daily_filled, forecast, metrics), path)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def metrics_markdown(metrics: pl.DataFrame, symbol: str | None = None) -> str:
    """Markdown table, one row per horizon: MAPE of each model, skill and coverage."""
    m = _for_symbol(metrics, symbol) if symbol else metrics
    if "symbol" in m.columns and m["symbol"].n_unique() > 1:
        raise ValueError("metrics hold several symbols; pass symbol=")
    models = [x for x in MODEL_ORDER if x in set(m["model"].to_list())]
    header = (
        ["horizon"]
        + [f"{x} MAPE" for x in models]
        + [f"{x} skill" for x in models if x != "naive"]
        + [f"{x} coverage" for x in models]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for h in sorted(set(m["horizon"].to_list())):
        rows = {r["model"]: r for r in m.filter(pl.col("horizon") == h).iter_rows(named=True)}
        cells = (
            [f"{h}d"]
            + [_pct(rows[x]["mape"]) for x in models]
            + [_num(rows[x]["skill"]) for x in models if x != "naive"]
            + [_pct(rows[x]["coverage"]) for x in models]
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
