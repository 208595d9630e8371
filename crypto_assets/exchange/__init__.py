"""The exchange: a Binance REST client (rate-limited, retrying) and the exchange replay server that stands in
for Binance in tests and the demo."""
