"""Find the source files behind the settings and tell each one's symbol."""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from crypto_assets.batch.sources.errors import SourceFormatError
from crypto_assets.settings import SourceSpec, validate_symbol

SUPPORTED_SUFFIXES = (".csv", ".zip", ".gz")  # the content decides how a file is read


@dataclass(frozen=True)
class SourceFile:
    path: Path
    symbol: str
    rank: int  # earlier sources win when two disagree on a minute


def infer_symbol(path: Path, known_symbols: Iterable[str]) -> str | None:
    """'BTCUSDT-1m-2024-03.zip' and 'BTCUSDT_1m.csv' name their symbol; the longest configured prefix wins."""
    stem = path.name.upper()
    for symbol in sorted(known_symbols, key=len, reverse=True):
        if stem.startswith(symbol) and (len(stem) == len(symbol) or not stem[len(symbol)].isalnum()):
            return symbol
    return None


def _expand(pattern: str) -> list[Path]:
    path = Path(pattern)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
    if any(ch in pattern for ch in "*?["):
        return sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    return [path]


def discover_sources(
    specs: Sequence[SourceSpec], known_symbols: Sequence[str]
) -> tuple[list[SourceFile], list[SourceFormatError]]:
    """Expand files, directories and globs; a file that cannot be placed is reported, not fatal."""
    found: list[SourceFile] = []
    problems: list[SourceFormatError] = []
    seen: set[Path] = set()
    for spec in specs:
        for path in _expand(spec.path):
            resolved = path.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            if not path.is_file():
                problems.append(SourceFormatError(path, 0, "path", "no such file"))
                continue
            symbol = spec.symbol or infer_symbol(path, known_symbols)
            if symbol is None:
                problems.append(
                    SourceFormatError(
                        path,
                        0,
                        "symbol",
                        f"cannot tell the symbol from the file name; start it with one of "
                        f"{', '.join(known_symbols)} or set 'symbol' for this source",
                    )
                )
                continue
            found.append(SourceFile(resolved, validate_symbol(symbol), len(found)))
    return found, problems
