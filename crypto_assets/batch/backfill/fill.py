"""Fill the minute gaps of a time window from the exchange, one atomically committed chunk at a time.

The ``exchange_backfill`` asset and the ``crypto-assets backfill`` command both call :func:`backfill_window`.
A chunk is a few thousand missing minutes of one symbol and month. Committing it rewrites, each atomically and
in this order, the month's ``exchange_minutes`` (what was fetched), ``quarantine`` (fetched candles that break
a rule), ``minute_raw`` (valid candles merged in; existing rows win) and ``exchange_empty`` (what the
exchange had nothing valid for). A process killed between two of these writes leaves nothing half-written:
the next run finds the same gaps, first merges candles already fetched, and asks again only for the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from crypto_assets.batch.backfill.gaps import find_gaps
from crypto_assets.batch.backfill.lock import LakeBusyError, minute_raw_lock
from crypto_assets.batch.backfill.store import (
    EXCHANGE_EMPTY,
    EXCHANGE_MINUTES,
    read_partition,
    write_partition,
)
from crypto_assets.batch.backfill.transforms import (
    Chunk,
    exchange_rows,
    last_closed_minute_end,
    merge_minutes,
    plan_chunks,
    replace_quarantine,
    unfilled_ranges,
    within_ranges,
)
from crypto_assets.batch.minute_ingest import MINUTE_DATASET, QUARANTINE_DATASET
from crypto_assets.batch.transforms.gaps import RANGE_SCHEMA, merge_ranges
from crypto_assets.exchange.source import KlineSource
from crypto_assets.lake.layout import Month, partition_path
from crypto_assets.lake.location import scan_parquet
from crypto_assets.schema import MINUTE_SCHEMA, QUARANTINE_SCHEMA

DEFAULT_CHUNK_MINUTES = 5_000  # five full pages of klines per commit
# A range this close to now that came back empty may only be late; it is not recorded as an outage.
EMPTY_SETTLE = timedelta(minutes=5)


class FetchError(RuntimeError):
    """The exchange client gave up on a request."""


# Another writer of minute_raw (a backfill or an ingest) held the lake's lock for longer than the wait allowed.
BackfillBusyError = LakeBusyError


@dataclass
class ChunkReport:
    symbol: str
    month: Month
    gap_minutes: int  # missing minutes the chunk asked for
    received: int = 0  # candles that came back inside the gaps
    added: int = 0  # valid candles merged into minute_raw
    quarantined: int = 0
    empty_minutes: int = 0  # minutes the exchange had no valid candle for
    requests: int = 0
    seconds: float = 0.0
    fetch_seconds: float = 0.0  # of ``seconds``, waiting for and parsing the exchange's answers

    def describe(self) -> str:
        return (
            f"{self.symbol} {self.month}: {self.gap_minutes:,} missing minutes -> {self.added:,} added, "
            f"{self.empty_minutes:,} empty at the exchange, {self.quarantined:,} quarantined "
            f"({self.requests} requests, {self.seconds:.2f} s)"
        )


@dataclass
class BackfillResult:
    gaps_before: pl.DataFrame  # GAP_SCHEMA
    gaps_after: pl.DataFrame  # GAP_SCHEMA
    chunks: list[ChunkReport] = field(default_factory=list)
    recovered: int = 0  # candles fetched by an interrupted run, merged without asking again
    empty_found: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=RANGE_SCHEMA))
    error: str | None = None  # why the exchange stopped answering; the chunks before it are committed
    # Every minute of the window before this was asked for (or found in minute_raw): the window is as complete
    # as the exchange can make it up to here. min(end, the exchange's clock - EMPTY_SETTLE); None after an error.
    covered_until: datetime | None = None

    @property
    def requests(self) -> int:
        return sum(c.requests for c in self.chunks)

    @property
    def added(self) -> int:
        return self.recovered + sum(c.added for c in self.chunks)

    @property
    def received(self) -> int:
        return sum(c.received for c in self.chunks)

    @property
    def quarantined(self) -> int:
        return sum(c.quarantined for c in self.chunks)

    @property
    def remaining(self) -> pl.DataFrame:
        """Gaps left that the exchange was not yet asked for."""
        return self.gaps_after.filter(~pl.col("exchange_empty"))

    @property
    def known_empty(self) -> pl.DataFrame:
        return self.gaps_after.filter(pl.col("exchange_empty"))

    def per_symbol(self, symbols: list[str]) -> list[str]:
        """One line per symbol for the run's log: what was asked, added, found empty and what is left."""
        lines = []
        for symbol in symbols:
            mine = [c for c in self.chunks if c.symbol == symbol]
            left = pending_minutes(self.gaps_after.filter(pl.col("symbol") == symbol))
            lines.append(
                f"{symbol}: {sum(c.gap_minutes for c in mine):,} missing minutes asked in {len(mine)} chunk(s) -> "
                f"{sum(c.added for c in mine):,} added, {sum(c.empty_minutes for c in mine):,} empty at the "
                f"exchange, {sum(c.quarantined for c in mine):,} quarantined; {left:,} left to fetch"
            )
        return lines


def pending_minutes(gaps: pl.DataFrame) -> int:
    return int(gaps.filter(~pl.col("exchange_empty"))["minutes"].sum() or 0)


class _Committer:
    """Writes one chunk's results into the month partitions of one symbol."""

    def __init__(self, lake: Path, latest_time: datetime, settle_before: datetime):
        self.lake = lake
        self.latest_time = latest_time
        self.settle_before = settle_before

    def _validated(self, symbol: str, month: Month, fetched: pl.DataFrame) -> tuple[pl.DataFrame, str]:
        """The month's stored exchange candles with ``fetched`` added (first fetch wins), validated."""
        stored = read_partition(self.lake, EXCHANGE_MINUTES, symbol, month, MINUTE_SCHEMA)
        path = partition_path(self.lake, EXCHANGE_MINUTES, symbol, month)
        if fetched.height:
            merged = merge_minutes(stored, fetched)
            if merged.height != stored.height:
                write_partition(merged, self.lake, EXCHANGE_MINUTES, symbol, month)
            stored = merged
        return exchange_rows(stored.lazy(), str(path), 0, self.latest_time).collect(), str(path)

    def merge(self, symbol: str, month: Month, fetched: pl.DataFrame) -> tuple[pl.DataFrame, int, int]:
        """Store ``fetched``, quarantine the month's invalid exchange candles and merge its valid ones.

        Returns the valid exchange candles of the month, the rows added to minute_raw and the rows quarantined
        from ``fetched``.
        """
        rows, source_file = self._validated(symbol, month, fetched)
        bad = rows.filter(pl.col("reason").is_not_null())
        quarantine = read_partition(self.lake, QUARANTINE_DATASET, symbol, month, QUARANTINE_SCHEMA)
        if bad.height or (quarantine["source_file"] == source_file).any():
            updated = replace_quarantine(quarantine, source_file, bad)
            if not updated.equals(quarantine):
                write_partition(updated, self.lake, QUARANTINE_DATASET, symbol, month)
        good = rows.filter(pl.col("reason").is_null()).select(MINUTE_SCHEMA.names())
        existing = read_partition(self.lake, MINUTE_DATASET, symbol, month, MINUTE_SCHEMA)
        merged = merge_minutes(existing, good)
        added = merged.height - existing.height
        if added:
            write_partition(merged, self.lake, MINUTE_DATASET, symbol, month)
        quarantined = fetched.join(bad.select("symbol", "open_time"), on=["symbol", "open_time"], how="semi").height
        return good, added, quarantined

    def record_empty(self, symbol: str, month: Month, requested: pl.DataFrame, valid: pl.DataFrame) -> pl.DataFrame:
        """Store the requested ranges no valid candle came back for; returns the new ranges."""
        empty = unfilled_ranges(requested.lazy(), valid.lazy()).collect()
        empty = empty.filter(pl.col("gap_start") < self.settle_before).with_columns(
            pl.min_horizontal("gap_end", pl.lit(self.settle_before)).alias("gap_end")
        )
        empty = empty.with_columns(((pl.col("gap_end") - pl.col("gap_start")).dt.total_minutes()).alias("minutes"))
        if empty.height:
            stored = read_partition(self.lake, EXCHANGE_EMPTY, symbol, month, RANGE_SCHEMA)
            merged = merge_ranges(pl.concat([stored, empty.cast(dict(RANGE_SCHEMA))]).lazy()).collect()
            write_partition(merged, self.lake, EXCHANGE_EMPTY, symbol, month)
        return empty.cast(dict(RANGE_SCHEMA))


def _exchange_now(client: KlineSource, now: datetime) -> datetime:
    """The exchange's clock when the client can read it (never later than ours): asking beyond it returns
    nothing, which says nothing about those minutes."""
    exchange_clock = getattr(client, "server_time_ms", None)
    if exchange_clock is None:
        return now
    try:
        return min(now, datetime.fromtimestamp(exchange_clock() / 1000, UTC))
    except Exception as exc:  # as in _fetch: the client's error names the request
        raise FetchError(f"exchange clock: {exc}") from exc


def _requests_sent(client: KlineSource) -> int | None:
    return getattr(client, "requests_sent", None)


def _fetch(client: KlineSource, chunk: Chunk, closed_end: datetime) -> tuple[pl.DataFrame, int]:
    """The candles of the chunk's requested ranges that fall in its gaps, and the requests it took.

    Ranges are cut at ``closed_end`` (the exchange's last closed minute), so every candle asked for is final
    and the client need not read the exchange clock again for each range.
    """
    before = _requests_sent(client)
    ranges = [(start, min(end, closed_end)) for start, end in chunk.fetches if start < closed_end]
    try:
        pages = [page for start, end in ranges for page in client.klines(chunk.symbol, start, end, closed_only=False)]
    except Exception as exc:  # the client's own error names the request; anything it raises ends the run
        raise FetchError(f"{chunk.symbol} {chunk.month}: {exc}") from exc
    after = _requests_sent(client)
    requests = after - before if before is not None and after is not None else len(pages)
    frame = pl.concat(pages) if pages else pl.DataFrame(schema=MINUTE_SCHEMA)
    return within_ranges(frame.lazy(), chunk.gap_frame().lazy()).collect(), requests


def backfill_window(
    lake: Path,
    starts: Mapping[str, date],
    client: KlineSource,
    start: datetime,
    end: datetime,
    *,
    chunk_minutes: int = DEFAULT_CHUNK_MINUTES,
    now: datetime | None = None,
    on_plan: Callable[[int], None] | None = None,
    on_chunk: Callable[[ChunkReport], None] | None = None,
    lock_timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> BackfillResult:
    """Fill the gaps of ``minute_raw`` in [start, end) for the symbols of ``starts`` from ``client``.

    ``on_plan(minutes)`` is told how many missing minutes will be asked for; ``on_chunk`` gets each
    committed chunk's report. When the exchange fails for good, the run stops there and ``error`` says why;
    what was committed stays, and the next run resumes from the gaps that remain.

    The whole run holds the lake's ``minute_raw`` lock (:mod:`crypto_assets.batch.backfill.lock`), shared with
    the ingest: it waits up to ``lock_timeout`` seconds for another writer (telling ``on_wait``), then raises
    :class:`LakeBusyError`.
    """
    now = now or datetime.now(UTC)
    with minute_raw_lock(lake, "exchange backfill", lock_timeout, on_wait):
        committer = _Committer(lake, latest_time=now + timedelta(days=1), settle_before=now - EMPTY_SETTLE)
        gaps = find_gaps(lake, starts, start, end, now)
        result = BackfillResult(gaps_before=gaps, gaps_after=gaps)
        result.recovered = _merge_fetched_earlier(committer, lake, gaps)
        if result.recovered:
            gaps = find_gaps(lake, starts, start, end, now)
        chunks = plan_chunks(gaps, chunk_minutes)
        if on_plan:
            on_plan(sum(c.minutes for c in chunks))
        empties = []
        closed_end = last_closed_minute_end(now)
        exchange_now = now
        if chunks:
            try:
                exchange_now = _exchange_now(client, now)
            except FetchError as exc:
                result.error, chunks = str(exc), []
            else:
                closed_end = last_closed_minute_end(exchange_now)
                # An empty answer this close to the exchange's now may only be late, not an outage.
                committer.settle_before = exchange_now - EMPTY_SETTLE
        for chunk in chunks:
            began = time.perf_counter()
            try:
                fetched, requests = _fetch(client, chunk, closed_end)
            except FetchError as exc:
                result.error = str(exc)
                break
            fetched_at = time.perf_counter()
            valid, added, quarantined = committer.merge(chunk.symbol, chunk.month, fetched)
            requested = chunk.gap_frame()
            valid_in_gaps = within_ranges(valid.lazy(), requested.lazy()).collect()
            empty = committer.record_empty(chunk.symbol, chunk.month, requested, valid_in_gaps)
            empties.append(empty)
            report = ChunkReport(
                chunk.symbol,
                chunk.month,
                chunk.minutes,
                fetched.height,
                added,
                quarantined,
                int(empty["minutes"].sum() or 0),
                requests,
                time.perf_counter() - began,
                fetched_at - began,
            )
            result.chunks.append(report)
            if on_chunk:
                on_chunk(report)
        result.empty_found = pl.concat(empties) if empties else pl.DataFrame(schema=RANGE_SCHEMA)
        result.gaps_after = find_gaps(lake, starts, start, end, now) if chunks or result.recovered else gaps
        if result.error is None:
            result.covered_until = min(end, exchange_now - EMPTY_SETTLE)
    return result


def _merge_fetched_earlier(committer: _Committer, lake: Path, gaps: pl.DataFrame) -> int:
    """Merge candles an interrupted run stored in ``exchange_minutes`` but did not merge into ``minute_raw``."""
    todo = gaps.filter(~pl.col("exchange_empty"))
    recovered = 0
    keys = todo.select("symbol", pl.col("gap_start").dt.year().alias("y"), pl.col("gap_start").dt.month().alias("m"))
    for symbol, year, month in keys.unique().sort("symbol", "y", "m").iter_rows():
        path = partition_path(lake, EXCHANGE_MINUTES, symbol, Month(year, month))
        if not path.is_file():
            continue
        stored = within_ranges(scan_parquet([path]), todo.lazy()).select(pl.len()).collect().item()
        if stored:
            _, added, _ = committer.merge(symbol, Month(year, month), pl.DataFrame(schema=MINUTE_SCHEMA))
            recovered += added
    return recovered
