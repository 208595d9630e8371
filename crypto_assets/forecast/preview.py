"""A small static PNG of the forecast report, inlined in the materialization metadata as a markdown image so
the Dagster UI shows it on the asset page (the interactive Plotly report is the full view)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # no display; safe in Dagster's run workers

import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from crypto_assets.forecast.charts import COLORS, MODEL_ORDER  # noqa: E402

RECENT_DAYS = 365


def preview_png(symbol: str, daily_filled: pl.DataFrame, forecast: pl.DataFrame, metrics: pl.DataFrame) -> bytes:
    """Two panels: the last year of closes with MA7/MA30 and the forecast band; CV MAPE by horizon per model."""
    daily = daily_filled.filter(pl.col("symbol") == symbol).sort("date").tail(RECENT_DAYS)
    fc = forecast.filter(pl.col("symbol") == symbol) if "symbol" in forecast.columns else forecast
    fc = fc.filter(pl.col("is_forecast")).sort("ds") if "is_forecast" in fc.columns else fc.sort("ds")
    fig, (price, errors) = plt.subplots(1, 2, figsize=(11, 3.6), dpi=80, gridspec_kw={"width_ratios": [2.2, 1]})
    try:
        price.plot(daily["date"].to_list(), daily["close"].to_list(), color="#222", lw=1, label="close")
        for column, color in (("ma7", "#2ca02c"), ("ma30", "#d62728")):
            price.plot(daily["date"].to_list(), daily[column].to_list(), color=color, lw=0.8, label=column.upper())
        if fc.height:
            x = fc["ds"].to_list()
            price.fill_between(x, fc["yhat_lower"].to_list(), fc["yhat_upper"].to_list(), color=COLORS["prophet"], alpha=0.2)
            price.plot(x, fc["yhat"].to_list(), color=COLORS["prophet"], lw=1.2, label=f"forecast ({fc.height} d)")
        price.set_title(f"{symbol}: last {daily.height} days and forecast", fontsize=10)
        price.legend(fontsize=7, loc="upper left")
        price.tick_params(labelsize=7)

        m = metrics.filter(pl.col("symbol") == symbol) if "symbol" in metrics.columns else metrics
        horizons = sorted(m["horizon"].unique().to_list()) if m.height else []
        width = 0.8 / len(MODEL_ORDER)
        for i, model in enumerate(MODEL_ORDER):
            rows = m.filter(pl.col("model") == model).sort("horizon")
            if rows.height:
                positions = [horizons.index(h) + (i - 1) * width for h in rows["horizon"]]
                errors.bar(positions, (rows["mape"] * 100).to_list(), width, color=COLORS[model], label=model)
        errors.set_xticks(range(len(horizons)), [f"{h}d" for h in horizons])
        errors.set_title("CV MAPE % by horizon", fontsize=10)
        errors.legend(fontsize=7)
        errors.tick_params(labelsize=7)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(fig)


def markdown_image(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
