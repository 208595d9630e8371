"""Daily price forecasting core: pure functions, no Dagster imports.

options (ForecastOptions) · model (Prophet fit/forecast) · baselines (naive, drift)
· cross_validation (rolling origin, process pool) · results (tables,
atomic Parquet/CSV via crypto_assets.lake.atomic) · charts (Plotly HTML, markdown summary).
"""
