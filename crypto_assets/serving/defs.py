"""This package's part of the Dagster code location: the unified view and its checks."""

from __future__ import annotations

from dagster import Definitions

from crypto_assets.serving.assets import build_serving_assets
from crypto_assets.settings import Settings


def build_defs(settings: Settings) -> Definitions:
    return Definitions(assets=build_serving_assets(settings))
