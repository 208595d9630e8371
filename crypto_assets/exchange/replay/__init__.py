"""The exchange replay server: stands in for Binance (REST klines, WebSocket kline/trade streams) in tests
and the demo. See :mod:`crypto_assets.exchange.replay.server`."""
