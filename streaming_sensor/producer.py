"""Exchange WebSocket (Binance combined stream) -> Kafka.

One connection carries ``<symbol>@kline_1m`` and ``<symbol>@trade`` for every configured symbol. Each message's
``data`` object is published to ``<prefix>.kline_1m`` or ``<prefix>.trade`` keyed by symbol (so a symbol's
events stay in order within a partition) with acks=all; the Kafka timestamp is the moment the message arrived.

Failure handling:

* The connection is re-opened with exponential backoff and full jitter after a drop, a ``serverShutdown``
  event, a silent connection (watchdog), or before the exchange's 24-hour limit. Pings are answered by the
  WebSocket client.
* Every stretch of exchange time not captured (disconnect -> first event after reconnect, producer stopped,
  messages dropped) is written to :mod:`crypto_assets.lake.missed` for the batch layer to backfill.
* A producer that dies without stopping (SIGKILL, OOM, power) records nothing itself. So every
  ``state_seconds`` it writes, atomically, the newest event time per symbol that Kafka acknowledged
  (:func:`state_path`); at start, a state not marked as cleanly stopped opens a "producer crashed" stretch per
  symbol from that time, closed by the symbol's first event. Messages still buffered at the crash are inside
  that stretch, since only acknowledged ones move the time on.
* A malformed message is counted and logged; the stream goes on.
* The embedded broker keeps every message in memory: after ``trim_bytes`` of messages the producer holds new
  ones in its buffer while it rotates the topics, once the stream job has committed all they hold
  (:mod:`streaming_sensor.trim`).
* While the broker is unreachable, messages wait in a bounded in-memory buffer and are retried in order;
  none is lost while the buffer holds. When it is full, new messages are dropped, counted, and recorded as
  missed stretches. Delivery to Kafka is at-least-once: a retried send may duplicate a message, which the
  stream job tolerates (kline updates replace; a trade is folded only after the newest kline update).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from aiokafka.partitioner import DefaultPartitioner

from crypto_assets.lake.atomic import write_text_atomic
from crypto_assets.lake.missed import MissedLog, MissedStretch, open_stretches, stretches_path
from crypto_assets.settings import Settings
from crypto_assets.validation import validate_symbol
from streaming_sensor.broker import ensure_topics, topic_name
from streaming_sensor.checkpoint import checkpoint_path
from streaming_sensor.trim import NOT_EMBEDDED, rotate_when_read, rotation_note_path

log = logging.getLogger(__name__)

STREAM_KINDS = {"kline_1m": "kline", "trade": "trade"}
SEND_CHUNK = 20_000  # at most this many in flight; a chunk is what the buffer holds, so it grows when sends lag
# A broker pays per record batch (Tansu's fetches slow down as a partition's batches pile up): a chunk waits this
# long to fill, as aiokafka's linger did for send().
LINGER_SECONDS = 0.02
READ_TURN = 256  # messages read before the reader lets the other tasks run
PARTITIONER = DefaultPartitioner()  # what AIOKafkaProducer uses by default: murmur2 of the key


@dataclass
class ProducerOptions:
    symbols: list[str]
    ws_url: str
    bootstrap_servers: str
    topic_prefix: str
    partitions: int = 3
    buffer_limit: int = 200_000  # messages held while the broker is unreachable
    silence_seconds: float = 30.0  # no message for this long: the connection is treated as dead
    max_connection_seconds: float = 23.5 * 3600  # Binance closes connections after 24 hours
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    stats_seconds: float = 10.0
    drain_seconds: float = 15.0  # on stop, time allowed to deliver what is buffered
    state_seconds: float = 1.0  # how often the acknowledged event times are saved (see state_path)
    trim_bytes: int = 0  # rotate the embedded broker's topics after about this many bytes sent; 0: never
    trim_wait_seconds: float = 30.0  # how long a rotation waits for the stream to commit what the topics hold
    trim_retry_seconds: float = 60.0  # after a rotation that could not happen, the next try

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> ProducerOptions:
        values = {
            "symbols": settings.symbol_names,
            "ws_url": settings.exchange.ws_url,
            "bootstrap_servers": settings.kafka.bootstrap_servers,
            "topic_prefix": settings.kafka.topic_prefix,
            "partitions": settings.kafka.partitions,
            "trim_bytes": settings.kafka.embedded_max_mb << 20,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def stream_url(ws_url: str, symbols: list[str]) -> str:
    streams = "/".join(f"{validate_symbol(s).lower()}@{kind}" for s in symbols for kind in STREAM_KINDS)
    return f"{ws_url.rstrip('/')}/stream?streams={streams}"


def state_path(speed_dir: Path) -> Path:
    """``{"delivered_ms": {symbol: ms}, "stopped": bool, ...}``: what a crashed producer leaves for the next."""
    return stretches_path(speed_dir).with_name("producer_state.json")


def read_state(speed_dir: Path) -> dict:
    path = state_path(speed_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        log.error("unreadable producer state %s: ignored (no crash stretch can be recorded from it)", path)
        return {}
    return data if isinstance(data, dict) else {}


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(max, initial * 2**attempt)], so many clients do not reconnect in step."""
    return rng.uniform(0, min(maximum, initial * (2**attempt)))


@dataclass
class Counters:
    received: int = 0
    published: int = 0
    malformed: int = 0
    dropped: int = 0
    reconnects: int = 0

    def line(self, buffered: int) -> str:
        return (
            f"received={self.received} published={self.published} malformed={self.malformed} "
            f"dropped={self.dropped} reconnects={self.reconnects} buffered={buffered}"
        )


class Malformed(ValueError):
    pass


class Outgoing(NamedTuple):  # a tuple: one is built per message, and a frozen dataclass costs more
    topic: str
    key: bytes
    value: bytes
    received_ms: int
    symbol: str
    event_ms: int


_DECODER = json.JSONDecoder()
_HEAD, _MID = b'{"stream":"', b'","data":'


class MessageParser:
    """Combined-stream messages -> what to publish, for one topic prefix and set of symbols."""

    def __init__(self, prefix: str, symbols: set[str]) -> None:
        self.topics = {stream: topic_name(prefix, stream) for stream in STREAM_KINDS}
        self.keys = {symbol: symbol.encode() for symbol in symbols}
        names = [f"{symbol.lower()}@{stream}" for symbol in sorted(symbols) for stream in STREAM_KINDS]
        self.streams = {name.encode(): name for name in names}

    def parse(self, raw: bytes | str, received_ms: int) -> Outgoing | str:
        """What to publish, or ``"serverShutdown"``; raises Malformed otherwise."""
        if isinstance(raw, str):
            raw = raw.encode()
        # The usual frame is exactly {"stream":"<subscribed stream>","data":<one JSON value>}: then only data is
        # parsed and its own bytes are published. Any other shape is parsed whole and data serialized again.
        if raw.startswith(_HEAD) and raw.endswith(b"}"):
            mid = raw.find(_MID, len(_HEAD))
            stream = self.streams.get(raw[len(_HEAD) : mid]) if mid > 0 else None
            if stream is not None:
                value = raw[mid + len(_MID) : -1]
                try:
                    text = value.decode()
                    data, end = _DECODER.raw_decode(text)
                    whole = end == len(text)
                except ValueError:  # UnicodeDecodeError too
                    whole = False
                if whole:
                    return self._checked(stream, data, value, received_ms)
        try:
            message = json.loads(raw)
        except ValueError as exc:
            raise Malformed(f"not JSON: {exc}") from None
        if not isinstance(message, dict):
            raise Malformed("not a JSON object")
        return self._checked(message.get("stream"), message.get("data", message), None, received_ms)

    def _checked(self, stream, data, value: bytes | None, received_ms: int) -> Outgoing | str:
        if isinstance(data, dict) and data.get("e") == "serverShutdown":
            return "serverShutdown"
        if not isinstance(stream, str) or "@" not in stream or not isinstance(data, dict):
            raise Malformed("missing 'stream' or 'data'")
        kind = stream.split("@", 1)[1]
        if kind not in STREAM_KINDS or data.get("e") != STREAM_KINDS[kind]:
            raise Malformed(f"stream {stream!r} with event type {data.get('e')!r}")
        symbol = data.get("s")
        key = self.keys.get(symbol) if isinstance(symbol, str) else None
        if key is None:
            raise Malformed(f"symbol {symbol!r} is not subscribed")
        event_ms = data.get("E")
        if not isinstance(event_ms, int):
            raise Malformed("event time 'E' is not an integer")
        if STREAM_KINDS[kind] == "kline" and not isinstance(data.get("k"), dict):
            raise Malformed("kline without 'k'")
        if value is None:
            value = json.dumps(data, separators=(",", ":")).encode()
        return Outgoing(self.topics[kind], key, value, received_ms, symbol, event_ms)


@dataclass
class StreamProducer:
    options: ProducerOptions
    speed_dir: Path
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        self.symbols = {validate_symbol(s) for s in self.options.symbols}
        self._parser = MessageParser(self.options.topic_prefix, self.symbols)
        self.buffer: deque[Outgoing] = deque()
        self.in_flight = 0
        self.missed = MissedLog(self.speed_dir)
        self.last_event: dict[str, int] = {}
        # Stretches left open by an earlier run (or this one's disconnects) close at the next event.
        self.open: dict[str, list[MissedStretch]] = open_stretches(self.speed_dir)
        self.dropping: dict[str, list[int]] = {}
        self.connected = asyncio.Event()
        self.broker_ok = False
        self._rng = random.Random()
        self._wake = asyncio.Event()
        self._malformed_logged = 0
        self._down_logged = False
        self._heard = 0.0  # monotonic time of the newest WebSocket message (see _watchdog)
        self.delivered: dict[str, int] = {}  # symbol -> newest event time Kafka acknowledged
        self.sent_bytes = 0  # acknowledged since the topics were last rotated (or this producer started)
        self.rotations = 0
        self._next_trim = 0.0  # monotonic time before which no rotation is tried again
        self._saved: tuple | None = None
        self._recover_crash()

    # -- what a crash leaves behind ---------------------------------------------------------------------------
    def _recover_crash(self) -> None:
        """Open a stretch per symbol from the last acknowledged event time of a run that did not stop cleanly."""
        state = read_state(self.speed_dir)
        delivered = {str(k): int(v) for k, v in (state.get("delivered_ms") or {}).items()}
        if state and not state.get("stopped", True):
            for symbol, ms in sorted(delivered.items()):
                if symbol in self.symbols and not self.open.get(symbol):
                    stretch = self.missed.open(symbol, ms, "producer crashed")
                    self.open[symbol] = [stretch]
                    log.warning(
                        "the previous producer (pid %s) did not stop cleanly: missed stretch for %s from %s opened "
                        "(closed by the first event now)",
                        state.get("pid"),
                        symbol,
                        stretch.from_time,
                    )
        self.delivered = {s: ms for s, ms in delivered.items() if s in self.symbols}
        self._save_state(stopped=False)  # from now on a crash is a crash, whatever the last run did

    def _save_state(self, stopped: bool) -> None:
        key = (tuple(sorted(self.delivered.items())), stopped)
        if key == self._saved:
            return
        payload = {
            "delivered_ms": dict(sorted(self.delivered.items())),
            "stopped": stopped,
            "pid": os.getpid(),
            "updated_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        try:
            write_text_atomic(json.dumps(payload) + "\n", state_path(self.speed_dir))
            self._saved = key
        except OSError as exc:  # a full disk must not stop the stream; the next save tries again
            log.error("could not save the producer state %s: %s", state_path(self.speed_dir), exc)

    async def _state_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.options.state_seconds)
            except TimeoutError:
                self._save_state(stopped=False)

    # -- WebSocket side -------------------------------------------------------------------------------------
    def _accept(self, out: Outgoing) -> None:
        for stretch in self.open.pop(out.symbol, []):
            closed = self.missed.close(stretch, out.event_ms)
            log.info(
                "stream for %s resumed: missed %s .. %s (%s)",
                out.symbol,
                closed.from_time,
                closed.to_time,
                closed.reason,
            )
        self.last_event[out.symbol] = max(out.event_ms, self.last_event.get(out.symbol, out.event_ms))
        if len(self.buffer) + self.in_flight >= self.options.buffer_limit:
            self.counters.dropped += 1
            span = self.dropping.setdefault(out.symbol, [out.event_ms, out.event_ms])
            span[0], span[1] = min(span[0], out.event_ms), max(span[1], out.event_ms)
            if self.counters.dropped == 1 or self.counters.dropped % 10_000 == 0:
                log.error(
                    "buffer full (%d messages, broker unreachable): dropped %d so far",
                    self.options.buffer_limit,
                    self.counters.dropped,
                )
            return
        self._flush_dropped()
        self.buffer.append(out)
        self._wake.set()

    def _flush_dropped(self) -> None:
        for symbol, (first, last) in self.dropping.items():
            stretch = self.missed.record(symbol, first, last, "buffer full")
            log.warning(
                "recorded missed stretch for %s: %s .. %s (buffer full)", symbol, stretch.from_time, stretch.to_time
            )
        self.dropping.clear()

    def _malformed(self, reason: str, raw) -> None:
        self.counters.malformed += 1
        if self._malformed_logged < 20 or self.counters.malformed % 1000 == 0:
            self._malformed_logged += 1
            text = raw[:200] if isinstance(raw, str) else repr(raw[:200])
            log.warning("malformed message #%d skipped (%s): %s", self.counters.malformed, reason, text)

    def _stream_stopped(self, reason: str) -> None:
        """Open a missed stretch for every symbol that was streaming."""
        for symbol, last in self.last_event.items():
            if not self.open.get(symbol):
                self.open[symbol] = [self.missed.open(symbol, last, reason)]

    async def _read(self, ws, stop: asyncio.Event) -> str:
        """Read until the exchange ends the stream or the producer stops; returns why."""
        parse = self._parser.parse
        while True:
            raw = await ws.recv(decode=False)  # the bytes: published as they are, and bad UTF-8 is just malformed
            self._heard = time.monotonic()
            if stop.is_set():
                # A queued message is read without a pause, where a cancel would land: stop here, so that nothing
                # is accepted after the "producer stopped" stretch is opened.
                return "producer stopped"
            received_ms = time.time_ns() // 1_000_000
            self.counters.received += 1
            try:
                out = parse(raw, received_ms)
            except Malformed as exc:
                self._malformed(str(exc), raw)
                continue
            if out == "serverShutdown":
                log.warning("exchange announced serverShutdown: reconnecting")
                return "serverShutdown"
            self._accept(out)
            if self.counters.received % READ_TURN == 0:
                # Queued messages are read without a pause: let the publisher and the Kafka client run, so that
                # sending keeps up when the CPU is short.
                await asyncio.sleep(0)

    async def _watchdog(self) -> str:
        """Returns when the connection must be replaced: silent, or near the exchange's age limit. It runs beside
        the reader, so a message costs a clock read rather than a timer and a task of its own."""
        opened = self._heard = time.monotonic()
        silence, age_limit = self.options.silence_seconds, self.options.max_connection_seconds
        while True:
            now = time.monotonic()
            if now - self._heard >= silence:
                log.warning("no message for %.0fs: reconnecting", silence)
                return "silent connection"
            if now - opened >= age_limit:
                log.info("connection is %.0fh old: reconnecting before the exchange drops it", age_limit / 3600)
                return "connection age limit"
            await asyncio.sleep(min(self._heard + silence, opened + age_limit) - now)

    async def _websocket_loop(self, stop: asyncio.Event) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

        url = stream_url(self.options.ws_url, sorted(self.symbols))
        attempt = 0
        while not stop.is_set():
            reason = "connect failed"
            try:
                async with connect(
                    url, open_timeout=10, ping_interval=20, ping_timeout=20, max_queue=4096, max_size=1 << 22
                ) as ws:
                    log.info("connected to %s", self.options.ws_url)
                    self.connected.set()
                    attempt = 0
                    reader = asyncio.ensure_future(self._read(ws, stop))
                    watchdog = asyncio.ensure_future(self._watchdog())
                    stopper = asyncio.ensure_future(stop.wait())
                    try:
                        done, _ = await asyncio.wait({reader, watchdog, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for task in (reader, watchdog, stopper):
                            task.cancel()  # no-op for the one that finished
                    if reader in done:
                        reason = reader.result()
                    else:
                        await asyncio.wait({reader}, timeout=5.0)  # it accepts nothing more once stop is set
                        if reader.done() and not reader.cancelled():
                            reader.exception()  # retrieved: a close racing the stop is no error
                        reason = "producer stopped" if stop.is_set() else watchdog.result()
            except ConnectionClosed as exc:
                reason = f"connection closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
                log.warning("WebSocket %s", reason)
            except InvalidURI:
                raise
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                log.warning("WebSocket connect to %s failed: %s", self.options.ws_url, exc)
            self.connected.clear()
            self._stream_stopped(reason)
            if stop.is_set():
                break
            self.counters.reconnects += 1
            delay = backoff_delay(attempt, self.options.backoff_initial, self.options.backoff_max, self._rng)
            attempt += 1
            log.info("reconnecting in %.1fs (reconnect #%d)", delay, self.counters.reconnects)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass

    # -- Kafka side -----------------------------------------------------------------------------------------
    async def _start_kafka(self):
        from aiokafka import AIOKafkaProducer

        topics = [topic_name(self.options.topic_prefix, stream) for stream in STREAM_KINDS]
        await asyncio.to_thread(ensure_topics, self.options.bootstrap_servers, topics, self.options.partitions, 3.0)
        producer = AIOKafkaProducer(
            bootstrap_servers=self.options.bootstrap_servers,
            acks="all",
            linger_ms=5,
            max_batch_size=256 * 1024,
            request_timeout_ms=5_000,
            retry_backoff_ms=200,
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def _send_chunk(self, producer, chunk: list[Outgoing]) -> list[Outgoing]:
        """Send a chunk and wait for acks; returns the messages that were not acknowledged.

        It goes out as record batches (a future per batch rather than per message), each message to the
        partition ``send()`` would pick: the default partitioner's hash of its key, so a symbol's messages keep
        their partition and their order. A message is acknowledged when its batch is."""
        sent: list[tuple[asyncio.Future, list[int]]] = []  # per batch: its ack, and its messages' places in chunk
        try:
            partition_of = {}
            for topic, key in {(out.topic, out.key) for out in chunk}:
                partitions = sorted(await producer.partitions_for(topic))
                partition_of[topic, key] = PARTITIONER(key, partitions, partitions)
            places: dict[tuple[str, int], list[int]] = {}
            for i, out in enumerate(chunk):
                places.setdefault((out.topic, partition_of[out.topic, out.key]), []).append(i)
            for (topic, partition), indexes in places.items():
                batch, members = producer.create_batch(), []
                for i in indexes:
                    out = chunk[i]
                    if batch.append(key=out.key, value=out.value, timestamp=out.received_ms) is None:  # full
                        sent.append((await producer.send_batch(batch, topic, partition=partition), members))
                        batch, members = producer.create_batch(), []
                        batch.append(key=out.key, value=out.value, timestamp=out.received_ms)  # the first always fits
                    members.append(i)
                batch.close()  # closed: sent at once, with no linger and no send() adding to it
                sent.append((await producer.send_batch(batch, topic, partition=partition), members))
        except Exception as exc:  # noqa: BLE001 - any send failure means: keep the rest and retry
            log.error("Kafka send failed: %s", exc)
        results = await asyncio.gather(*(future for future, _ in sent), return_exceptions=True)
        acked = [False] * len(chunk)
        for result, (_, members) in zip(results, sent, strict=True):
            if not isinstance(result, BaseException):
                for i in members:
                    acked[i] = True
        failed = [out for out, ok in zip(chunk, acked, strict=True) if not ok]
        self.counters.published += len(chunk) - len(failed)
        self.sent_bytes += sum(len(out.value) + len(out.key) for out, ok in zip(chunk, acked, strict=True) if ok)
        # Acknowledged event times move on per symbol up to its first unacknowledged message (to be retried).
        blocked: set[str] = set()
        delivered = self.delivered
        for out, ok in zip(chunk, acked, strict=True):
            if out.symbol in blocked:
                continue
            if not ok:
                blocked.add(out.symbol)
            elif out.event_ms > delivered.get(out.symbol, -1):
                delivered[out.symbol] = out.event_ms
        return failed

    async def _publish_loop(self, stop: asyncio.Event, ws_done: asyncio.Event) -> None:
        producer = None
        attempt = 0
        drain_deadline = None
        try:
            while True:
                if ws_done.is_set():
                    if not self.buffer:
                        break
                    drain_deadline = drain_deadline or time.monotonic() + self.options.drain_seconds
                    if time.monotonic() > drain_deadline:
                        break
                if producer is None:
                    try:
                        producer = await self._start_kafka()
                        if not self.broker_ok:
                            log.info("Kafka broker reachable at %s", self.options.bootstrap_servers)
                        self.broker_ok, attempt = True, 0
                    except Exception as exc:  # noqa: BLE001 - unreachable broker, missing topics: retry
                        self._broker_down(exc)
                        await self._pause(backoff_delay(attempt, self.options.backoff_initial, 5.0, self._rng) + 0.2)
                        attempt += 1
                        continue
                if not self.buffer:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=0.2)
                    except TimeoutError:
                        pass
                    continue
                if len(self.buffer) < SEND_CHUNK and not ws_done.is_set():
                    await asyncio.sleep(LINGER_SECONDS)  # let the chunk fill: fewer, larger record batches
                chunk = [self.buffer.popleft() for _ in range(min(SEND_CHUNK, len(self.buffer)))]
                self.in_flight = len(chunk)
                failed = await self._send_chunk(producer, chunk)
                self.in_flight = 0
                if failed:
                    self.buffer.extendleft(reversed(failed))
                    self._broker_down(f"{len(failed)} message(s) not acknowledged")
                    await producer.stop()
                    producer = None
                    await self._pause(backoff_delay(attempt, self.options.backoff_initial, 5.0, self._rng))
                    attempt += 1
                else:
                    attempt = 0
                    if not self.broker_ok:
                        log.info("Kafka broker back: delivering %d buffered message(s)", len(self.buffer))
                    self.broker_ok = True
                    if self._trim_due() and await self._rotate():
                        await producer.stop()  # a fresh client for the new topics
                        producer = None
        finally:
            if producer is not None:
                await producer.stop()
            if self.buffer:
                self.counters.dropped += len(self.buffer)
                for out in self.buffer:
                    span = self.dropping.setdefault(out.symbol, [out.event_ms, out.event_ms])
                    span[0], span[1] = min(span[0], out.event_ms), max(span[1], out.event_ms)
                log.error("stopping with %d undelivered message(s): recorded as missed", len(self.buffer))
                self.buffer.clear()
            self._flush_dropped()

    def _trim_due(self) -> bool:
        return 0 < self.options.trim_bytes <= self.sent_bytes and time.monotonic() >= self._next_trim

    async def _rotate(self) -> bool:
        """Rotate the topics (nothing is in flight now; new messages wait in the buffer); True when done."""
        topics = [topic_name(self.options.topic_prefix, stream) for stream in STREAM_KINDS]
        try:
            why_not = await asyncio.to_thread(
                rotate_when_read,
                self.options.bootstrap_servers,
                topics,
                self.options.partitions,
                checkpoint_path(self.speed_dir),
                rotation_note_path(self.speed_dir),
                self.options.trim_wait_seconds,
            )
        except Exception as exc:  # noqa: BLE001 - the broker went away midway: the next try starts over
            why_not = f"failed: {exc}"
        if why_not is None:
            log.info("rotated topics %s after %d MB: the broker's memory is freed", topics, self.sent_bytes >> 20)
            self.sent_bytes, self.rotations = 0, self.rotations + 1
            return True
        if why_not == NOT_EMBEDDED:
            log.info("no topic rotation: %s", why_not)
            self._next_trim = float("inf")
            return False
        log.warning("topic rotation postponed (%s); next try in %.0fs", why_not, self.options.trim_retry_seconds)
        self._next_trim = time.monotonic() + self.options.trim_retry_seconds
        return False

    def _broker_down(self, why) -> None:
        if self.broker_ok or not self._down_logged:
            self._down_logged = True
            log.error(
                "Kafka broker at %s unreachable (%s): buffering, up to %d messages",
                self.options.bootstrap_servers,
                why,
                self.options.buffer_limit,
            )
        else:
            log.debug("Kafka broker still unreachable: %s", why)
        self.broker_ok = False

    async def _pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def _stats_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.options.stats_seconds)
            except TimeoutError:
                log.info("producer: %s", self.counters.line(len(self.buffer) + self.in_flight))

    async def run(self, stop: asyncio.Event) -> Counters:
        """Stream until ``stop`` is set, then deliver what is buffered (bounded by ``drain_seconds``)."""
        ws_done = asyncio.Event()

        async def websocket() -> None:
            try:
                await self._websocket_loop(stop)
            finally:
                ws_done.set()

        tasks = [
            asyncio.ensure_future(websocket()),
            asyncio.ensure_future(self._publish_loop(stop, ws_done)),
            asyncio.ensure_future(self._stats_loop(stop)),
            asyncio.ensure_future(self._state_loop(stop)),
        ]
        clean = False
        try:
            await asyncio.gather(*tasks[:2])
            clean = True
        finally:
            stop.set()
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Stopped cleanly: the stop and any undelivered messages are recorded stretches already.
            self._save_state(stopped=clean)
        log.info("producer stopped: %s", self.counters.line(len(self.buffer)))
        return self.counters
