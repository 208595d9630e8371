"""Which files feed ``minute_raw``: configured sources, files added with ``ingest``, else the synthetic default."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from crypto_assets.batch import synthetic
from crypto_assets.batch.sources.discovery import SourceFile, discover_sources
from crypto_assets.batch.sources.errors import SourceFormatError
from crypto_assets.settings import Settings, SourceSpec


def configured_specs(settings: Settings) -> list[SourceSpec]:
    specs = list(settings.sources)
    if settings.landing_dir.is_dir() and any(settings.landing_dir.iterdir()):
        specs.append(SourceSpec(str(settings.landing_dir)))
    return specs


def resolve_sources(
    settings: Settings, progress: Callable[[str, int], None] | None = None
) -> tuple[list[SourceFile], list[SourceFormatError], bool]:
    """The source files, the files that could not be placed, and whether the synthetic default is in use."""
    specs = configured_specs(settings)
    use_synthetic = not specs
    if use_synthetic:
        paths = synthetic.generate_dataset(
            settings.synthetic_dir, scale=settings.synthetic_scale, seed=settings.synthetic_seed, progress=progress
        )
        specs = [SourceSpec(str(p)) for p in paths]
    found, problems = discover_sources(specs, settings.symbol_names)
    return found, problems, use_synthetic


def history_starts(settings: Settings) -> dict[str, date]:
    """Each symbol's own first day: its configured start, raised to the synthetic market's first day while the
    synthetic default feeds the lake. Nothing before it is a partition to fill, a gap or a failed check, and
    the exchange is never asked for it."""
    starts = {spec.name: spec.start for spec in settings.symbols}
    if not configured_specs(settings):
        for series in synthetic.SCALES.get(settings.synthetic_scale, ()):
            if series.symbol in starts:
                starts[series.symbol] = max(starts[series.symbol], series.start.date())
    return starts
