"""Which files feed ``minute_raw``, in precedence order: files added with ``ingest`` (latest first), then
configured sources (in the order listed), else the synthetic default."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date

from crypto_assets.batch import synthetic
from crypto_assets.batch.landing import Manifest
from crypto_assets.batch.sources.discovery import SourceFile, discover_sources
from crypto_assets.batch.sources.errors import SourceFormatError
from crypto_assets.settings import Settings, SourceSpec


def configured_specs(settings: Settings) -> list[SourceSpec]:
    return list(settings.sources)


def landed_sources(settings: Settings) -> list[SourceFile]:
    """The landing folder's files, the latest ingest first (rank 0)."""
    if not settings.landing_dir.is_dir():
        return []
    return Manifest.load(settings.landing_dir).sources()


def uses_synthetic(settings: Settings, landed: list[SourceFile] | None = None) -> bool:
    """The synthetic market feeds the lake only when no source is configured and nothing was ingested."""
    return not configured_specs(settings) and not (landed if landed is not None else landed_sources(settings))


def resolve_sources(
    settings: Settings, progress: Callable[[str, int], None] | None = None
) -> tuple[list[SourceFile], list[SourceFormatError], bool]:
    """The source files ranked by precedence, the files that could not be placed, and whether the synthetic
    default is in use."""
    landed = landed_sources(settings)
    specs = configured_specs(settings)
    use_synthetic = uses_synthetic(settings, landed)
    if use_synthetic:
        paths = synthetic.generate_dataset(
            settings.synthetic_dir,
            scale=settings.synthetic_scale,
            seed=settings.synthetic_seed,
            progress=progress,
            symbols=settings.synthetic_symbols,
        )
        specs = [SourceSpec(str(p)) for p in paths]
    found, problems = discover_sources(specs, settings.symbol_names)
    landed_paths = {s.path for s in landed}
    configured = [s for s in found if s.path not in landed_paths]
    ranked = landed + [replace(s, rank=len(landed) + i) for i, s in enumerate(configured)]
    return ranked, problems, use_synthetic


def history_starts(settings: Settings) -> dict[str, date]:
    """Each symbol's own first day: its configured start, raised to the synthetic market's first day while the
    synthetic default feeds the lake. Nothing before it is a partition to fill, a gap or a failed check, and
    the exchange is never asked for it."""
    starts = {spec.name: spec.start for spec in settings.symbols}
    if uses_synthetic(settings):
        scale = settings.synthetic_scale
        generated = synthetic.market_series(scale, settings.synthetic_symbols) if scale in synthetic.SCALES else ()
        for series in generated:
            if series.symbol in starts:
                starts[series.symbol] = max(starts[series.symbol], series.start.date())
    return starts
