"""The exchange replay server: stands in for Binance (REST klines, WebSocket kline/trade streams) in tests
and the demo. See :mod:`crypto_assets.exchange.replay.server`."""

from crypto_assets.exchange.replay.market import Market, MarketError
from crypto_assets.exchange.replay.server import ReplayServer

__all__ = ["Market", "MarketError", "ReplayServer"]
