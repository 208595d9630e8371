"""This package's part of the Dagster code location."""

from __future__ import annotations

from dagster import Definitions

from crypto_assets.settings import Settings


def build_defs(settings: Settings) -> Definitions:
    return Definitions()
