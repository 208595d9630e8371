"""When the exchange backfill must not run: real exchange candles never go into the synthetic history.

With no sources configured and nothing ingested, ``minute_raw`` is built from the seeded synthetic market (the
demo). Its prices have nothing to do with the real exchange's, so filling its gaps from the real Binance API
would splice real candles into a made-up history (and offline, fail on every run). The replay server
(``crypto-assets exchange-replay``, started by ``crypto-assets up``) serves the same synthetic market on
127.0.0.1, so a backfill from a local exchange is allowed.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from crypto_assets.batch.source_catalog import configured_specs, landed_sources
from crypto_assets.settings import Settings


def is_local_exchange(rest_url: str) -> bool:
    """True when ``rest_url`` points at this machine (localhost, 127.0.0.0/8, ::1): a replay server."""
    host = (urlsplit(rest_url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def synthetic_mix_reason(settings: Settings) -> str | None:
    """Why the backfill is skipped, or None when it may run.

    It is skipped when ``minute_raw`` comes from the synthetic default (no ``[[sources]]`` and an empty landing
    directory) and ``exchange.rest_url`` is not a local replay server.
    """
    if configured_specs(settings) or landed_sources(settings):
        return None
    url = settings.exchange.rest_url
    if is_local_exchange(url):
        return None
    return (
        f"minute_raw holds the synthetic market (no [[sources]] configured, nothing ingested into "
        f"{settings.landing_dir}), and exchange.rest_url {url} is a real exchange, not a local replay server: "
        f"its candles would be mixed into the synthetic history. To fill gaps, configure real history files "
        f"(or `crypto-assets ingest` them), or point exchange.rest_url at `crypto-assets exchange-replay` "
        f"(`crypto-assets up` does); or set exchange.backfill = false"
    )


def backfill_runs(settings: Settings) -> bool:
    """Whether exchange_backfill fetches this lake's gaps (on, and not skipped by the rule above)."""
    return settings.exchange.backfill and synthetic_mix_reason(settings) is None
