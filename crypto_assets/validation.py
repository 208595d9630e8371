"""Names and locations that come from users, checked before they become paths, and the error every
configuration mistake raises. Below the lake and the settings, so both may use them."""

from __future__ import annotations

import re

SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{2,20}$")
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the key."""


def is_url(value: str) -> bool:
    return bool(URL_SCHEME.match(value))


def validate_symbol(symbol: str) -> str:
    """Symbols become path segments in the lake, so only upper-case letters and digits are allowed."""
    if not isinstance(symbol, str) or not SYMBOL_PATTERN.match(symbol):
        raise SettingsError(f"invalid symbol {symbol!r}: use 2-20 upper-case letters or digits, e.g. BTCUSDT")
    return symbol
