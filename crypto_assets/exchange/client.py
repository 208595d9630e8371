"""Binance spot REST client for 1-minute klines (``GET /api/v3/klines``).

Interface used by the exchange backfill; implemented in the exchange issue:

    client = ExchangeClient(settings.exchange)
    for page in client.klines("BTCUSDT", start, end):   # pages of <= 1000 rows, [start, end) in UTC
        ...                                              # each page: a polars DataFrame in MINUTE_SCHEMA
"""
