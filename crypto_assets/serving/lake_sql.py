"""SQL over the lake with Polars SQL: every dataset is a table, scanned lazily from its Parquet files.

Month-partitioned datasets (``<dataset>/symbol=S/year=Y/month=M``) and per-symbol ones (``<dataset>/symbol=S``)
are found by their layout, so a new dataset is queryable without code. The speed layer's micro-batches are
``speed_candles_1m`` and ``speed_daily`` (every committed version of each row, with ``batch_id``).

Only those tables are readable by default: Polars SQL's file functions (``read_csv('/any/path')``,
``read_parquet``, ``read_json``, ...) would read any file the user can, so a query calling one is refused
unless the caller opts in (``crypto-assets sql --allow-file-access``). String literals and comments are not
calls: ``WHERE symbol = 'read_x'`` runs. Every failure is a one-line :class:`SqlError`.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import polars as pl

from crypto_assets.lake.layout import DATASET_PATTERN, PART_FILE
from crypto_assets.lake.location import scan_parquet
from crypto_assets.lake.microbatch_log import (
    CANDLES_1M,
    DAILY,
    SPEED,
    latest_batch_id,
    speed_root,
)
from crypto_assets.serving.speed_store import committed_files, scan_files, speed_lock


class SqlError(ValueError):
    """The query could not be planned or run, or is not allowed; the one-line message says why."""


# Polars SQL's table functions that read files: a name of this form (bare or quoted) followed by "(" is a call.
FILE_FUNCTION = re.compile(r"\bread_\w*", re.IGNORECASE)
# How Polars' SQL tokenizer (sqlparser, generic dialect) reads what is not code: '' inside a string and "" or ``
# inside a quoted name are the quote itself (a backslash escapes nothing), "--" runs to the end of the line and
# /* */ comments nest. Anything else that could start a literal (a $$ string, E'..', a '$' '#' '@' in a name) is
# left to the strict rule below rather than out-guessed.
_QUOTE_ENDS = {
    "'": re.compile(r"'(?:[^']|'')*'"),
    '"': re.compile(r'"(?:[^"]|"")*"'),
    "`": re.compile(r"`(?:[^`]|``)*`"),
}
_WORD = re.compile(r"[A-Za-z0-9_]+")
_PLAIN_CODE = set(" \t\r\n\f()[]{},.;:=<>!+-*/%|~^")


def _code_tokens(query: str) -> list[str] | None:
    """The query's names (quoted ones unquoted) and punctuation, without its strings and comments; None when
    it holds a form this reading might not split where Polars does."""
    tokens: list[str] = []
    i = 0
    while i < len(query):
        ch, two = query[i], query[i : i + 2]
        if ch in _QUOTE_ENDS:
            if i and (query[i - 1].isalnum() or query[i - 1] in "_$&"):  # a prefixed literal: E'..', U&'..', x'..'
                return None
            quoted = _QUOTE_ENDS[ch].match(query, i)
            if quoted is None:
                return None
            if ch != "'":
                tokens.append(quoted.group(0)[1:-1].replace(ch * 2, ch))
            i = quoted.end()
        elif two == "--":
            end = query.find("\n", i)
            i = len(query) if end < 0 else end + 1
        elif two == "/*":
            depth, i = 1, i + 2
            while depth:
                opening, closing = query.find("/*", i), query.find("*/", i)
                if closing < 0:
                    return None
                depth, i = (depth + 1, opening + 2) if 0 <= opening < closing else (depth - 1, closing + 2)
        elif word := _WORD.match(query, i):
            tokens.append(word.group(0))
            i = word.end()
        elif ch in _PLAIN_CODE:
            if not ch.isspace():
                tokens.append(ch)
            i += 1
        else:
            return None
    return tokens


def check_lake_only(query: str) -> None:
    """Refuse a query that would read files outside the lake's tables."""
    tokens = _code_tokens(query)
    if tokens is None:  # strict: a file function's name anywhere refuses it
        found = FILE_FUNCTION.search(query)
        called = found.group(0) if found else None
    else:
        called = next(
            (t for t, after in zip(tokens, tokens[1:], strict=False) if after == "(" and FILE_FUNCTION.fullmatch(t)),
            None,
        )
    if called:
        raise SqlError(
            f"{called}(...) reads files outside the lake and is off; query the lake's tables "
            "(crypto-assets sql --tables), or pass --allow-file-access to read other files"
        )


def _one_line(text: str) -> str:
    return " ".join(str(text).split("\n\nResolved plan")[0].split())


def dataset_files(root: Path) -> list[Path]:
    """The part files of one dataset directory in either layout."""
    return sorted(root.glob(f"symbol=*/year=*/month=*/{PART_FILE}")) + sorted(root.glob(f"symbol=*/{PART_FILE}"))


def lake_tables(lake: Path) -> dict[str, pl.LazyFrame]:
    tables: dict[str, pl.LazyFrame] = {}
    if lake.is_dir():
        for root in sorted(
            p for p in lake.iterdir() if p.is_dir() and p.name != SPEED and DATASET_PATTERN.match(p.name)
        ):
            files = dataset_files(root)
            if files:
                tables[root.name] = scan_parquet(files, hive_partitioning=False)
    latest = latest_batch_id(lake)
    for dataset in (CANDLES_1M, DAILY):
        files = committed_files(lake, dataset, latest)
        if files:
            tables[f"speed_{dataset}"] = scan_files(files, dataset)
    return tables


def reading(lake: Path) -> AbstractContextManager:
    """Hold off compaction while micro-batch files are listed and read."""
    return speed_lock(lake, exclusive=False) if speed_root(lake).is_dir() else nullcontext()


def run_sql(lake: Path, query: str, allow_file_access: bool = False) -> pl.DataFrame:
    """Run ``query`` over the lake's tables; raises :class:`SqlError` with a one-line message."""
    if not allow_file_access:
        check_lake_only(query)
    with reading(lake):
        tables = lake_tables(lake)
        try:
            return pl.SQLContext(frames=tables).execute(query, eager=False).collect()
        except (pl.exceptions.SQLInterfaceError, pl.exceptions.SQLSyntaxError) as exc:
            known = ", ".join(tables) or "none (the lake is empty)"
            raise SqlError(f"{_one_line(exc)} (known tables: {known})") from exc
        except (pl.exceptions.PolarsError, OSError, ValueError, TypeError) as exc:
            raise SqlError(_one_line(exc)) from exc
        except pl.exceptions.PanicException as exc:  # a Polars bug on an odd query must not print a traceback
            raise SqlError(f"the query failed inside Polars: {_one_line(exc)}") from exc


def describe_tables(lake: Path) -> pl.DataFrame:
    with reading(lake):
        tables = lake_tables(lake)
        rows = [
            (name, ", ".join(f"{c} {t}" for c, t in frame.collect_schema().items())) for name, frame in tables.items()
        ]
    return pl.DataFrame(rows, schema=["table", "columns"], orient="row")
