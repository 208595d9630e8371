"""Find the source files behind the settings and tell each one's symbol."""

from __future__ import annotations

import glob
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from crypto_assets.batch.sources.errors import SourceFormatError
from crypto_assets.settings import SourceSpec
from crypto_assets.validation import validate_symbol

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


# What a path is when it is not a regular file, for the error that names it.
_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def not_a_regular_file(path: Path) -> str | None:
    """Why ``path`` cannot be a source ('no such file', 'is a FIFO (named pipe), not a regular file', ...), or
    None for a regular file. Told from its metadata only: opening a FIFO would wait for a writer forever."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "not a file")
    return f"is {kind}, not a regular file"


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
            problem = not_a_regular_file(path)
            if problem:
                problems.append(SourceFormatError(path, 0, "path", problem))
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
