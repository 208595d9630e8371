"""The market-data resource: where the lake is and what feeds it, resolved from the project settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dagster import ConfigurableResource

from crypto_assets.settings import Settings, load_settings

# The settings each process resolved for a home, handed over by the code location that built the resource.
_RESOLVED: dict[str, Settings] = {}


class MarketDataResource(ConfigurableResource):
    """Points the assets at a project home (lake, landing files, synthetic default)."""

    home: str

    @classmethod
    def for_settings(cls, settings: Settings) -> MarketDataResource:
        """The resource for these settings: runs in this process use them as they are, never a re-read."""
        _RESOLVED[str(settings.home)] = settings
        return cls(home=str(settings.home))

    def settings(self) -> Settings:
        """The settings the code location was built with; resolved here once if this process built none."""
        if self.home not in _RESOLVED:
            _RESOLVED[self.home] = dataclasses.replace(load_settings(), home=Path(self.home))
        return _RESOLVED[self.home]

    @property
    def lake(self) -> Path:
        """The lake of the settings: ``<home>/lake``, another folder, or an object-store location."""
        return self.settings().lake_dir
