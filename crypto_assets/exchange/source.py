"""The seam between the batch layer and an exchange: what the backfill asks of one, and the function that
opens the configured one. Binance's REST client (:mod:`crypto_assets.exchange.client`) is the only
implementation today; a second exchange implements :class:`KlineSource` and is chosen in :func:`open_exchange`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Protocol

import polars as pl

from crypto_assets.exchange.client import ExchangeClient
from crypto_assets.settings import ExchangeSettings


class KlineSource(Protocol):
    """An exchange's 1-minute candles over REST, in pages with the columns of ``MINUTE_SCHEMA``.

    The backfill also reads ``server_time_ms()`` (the exchange's clock, in ms) and ``requests_sent`` (a count,
    for its metadata) when a source has them.
    """

    def klines(
        self, symbol: str, start: datetime, end: datetime, closed_only: bool = True
    ) -> Iterator[pl.DataFrame]: ...


def open_exchange(settings: ExchangeSettings) -> ExchangeClient:
    """The configured exchange's client, to use with ``with``: it holds a connection."""
    return ExchangeClient(settings)
