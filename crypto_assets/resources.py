"""The market-data resource: where the lake is and what feeds it, resolved from the project settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dagster import ConfigurableResource

from crypto_assets.settings import Settings, load_settings


class MarketDataResource(ConfigurableResource):
    """Points the assets at a project home (lake, landing files, synthetic default)."""

    home: str

    def settings(self) -> Settings:
        return dataclasses.replace(load_settings(), home=Path(self.home))

    @property
    def lake(self) -> Path:
        return Path(self.home) / "lake"
