"""The asset names of the graph, defined once; every module and both layers refer to these constants."""

# Batch layer
MINUTE_RAW = "minute_raw"
MINUTE_GAPS = "minute_gaps"
EXCHANGE_BACKFILL = "exchange_backfill"
DAILY_RAW = "daily_raw"
DAILY_FILLED = "daily_filled"
PROPHET_INPUT = "prophet_input"

# Forecast graph
FORECASTS = "forecasts"
FORECAST_METRICS = "forecast_metrics"
FORECAST_RESULTS = "forecast_results"

# Speed and serving layers
SPEED_MICROBATCHES = "speed_microbatches"
UNIFIED_VIEW = "unified_view"
