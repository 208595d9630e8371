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


def preview_png(symbol: str, daily_filled: pl.DataFrame, forecasts: pl.DataFrame, metrics: pl.DataFrame) -> bytes:
    """Two panels: the last year of closes with the served forecast, its 80%/95% bands, Prophet and naive; CV MAPE
    by horizon per model."""
    daily = daily_filled.filter(pl.col("symbol") == symbol).sort("date").tail(RECENT_DAYS)
    fc = forecasts.filter(pl.col("symbol") == symbol) if "symbol" in forecasts.columns else forecasts
    served = fc.filter(pl.col("served")).sort("horizon")
    fig, (price, errors) = plt.subplots(1, 2, figsize=(11, 3.6), dpi=80, gridspec_kw={"width_ratios": [2.2, 1]})
    try:
        price.plot(daily["date"].to_list(), daily["close"].to_list(), color="#222", lw=1, label="close")
        if served.height:
            x = served["ds"].to_list()
            for tag, alpha in (("95", 0.12), ("80", 0.25)):
                if f"lower_{tag}" in served.columns and served[f"lower_{tag}"].null_count() == 0:
                    price.fill_between(
                        x,
                        served[f"lower_{tag}"].to_list(),
                        served[f"upper_{tag}"].to_list(),
                        color=COLORS["served"],
                        alpha=alpha,
                        lw=0,
                    )
            price.plot(x, served["yhat"].to_list(), color=COLORS["served"], lw=1.5, label="served")
            for model, style in (("prophet", "--"), ("naive", ":")):
                path = fc.filter(pl.col("model") == model).sort("horizon")
                if path.height:
                    price.plot(
                        path["ds"].to_list(), path["yhat"].to_list(), style, color=COLORS[model], lw=1, label=model
                    )
        price.set_title(f"{symbol}: last {daily.height} days and forecast", fontsize=10)
        price.legend(fontsize=7, loc="upper left")
        price.tick_params(labelsize=7)

        m = metrics.filter(pl.col("symbol") == symbol) if "symbol" in metrics.columns else metrics
        m = m.filter(pl.col("horizon").is_in([1, 7, 30]))
        horizons = sorted(m["horizon"].unique().to_list()) if m.height else []
        models = [x for x in MODEL_ORDER if x in set(m["model"].to_list())]
        width = 0.8 / max(len(models), 1)
        for i, model in enumerate(models):
            rows = m.filter(pl.col("model") == model).sort("horizon")
            positions = [horizons.index(h) + (i - (len(models) - 1) / 2) * width for h in rows["horizon"]]
            errors.bar(positions, (rows["mape"].fill_null(0) * 100).to_list(), width, color=COLORS[model], label=model)
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
