"""minute_raw's completeness check on a whole minute table at once: the tests' reference for the check the asset
builds window by window from what it wrote (crypto_assets.batch.written_minutes)."""

from __future__ import annotations

import polars as pl

from crypto_assets.batch.checks import Completeness, completeness_outcome
from crypto_assets.quality import CheckOutcome


def minutes_complete(minutes: pl.DataFrame, max_listed: int = 25, backfilled: bool = False) -> CheckOutcome:
    return completeness_outcome(Completeness.of(minutes), max_listed, backfilled)
