"""Subcommands of ``crypto-assets`` for this package; :func:`register` adds them to the parser.

``broker`` runs the embedded Kafka-compatible broker, ``produce`` streams the exchange into Kafka, and
``stream`` runs the Spark job that turns Kafka into speed-layer micro-batches. Each runs in the foreground
until Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiokafka", "websockets", "py4j"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger().addFilter(_quiet_py4j_retries)


def _quiet_py4j_retries(record: logging.LogRecord) -> bool:
    """py4j logs a command it retries on the root logger, at INFO and with a traceback; what counts is the
    retry's outcome, which it logs at ERROR when that fails too."""
    return record.levelno >= logging.WARNING or f"{os.sep}py4j{os.sep}" not in record.pathname


def _stop_on_signals(stop: threading.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())


def cmd_broker(args: argparse.Namespace) -> int:
    from streaming_sensor.broker import start_broker, topic_names

    settings = args.settings
    port = args.port or settings.kafka.broker_port
    _logging(False)
    broker = start_broker(port, topic_names(settings.kafka), settings.kafka.partitions, quiet=not args.broker_logs)
    print(
        f"Kafka-compatible broker (Tansu, in-memory) on {broker.bootstrap_servers}; topics "
        f"{', '.join(topic_names(settings.kafka))} with {settings.kafka.partitions} partitions (Ctrl-C stops it)",
        flush=True,
    )
    stop = threading.Event()
    _stop_on_signals(stop)
    try:
        while not stop.wait(1.0):
            if broker.process.poll() is not None:
                print(f"error: the broker exited with code {broker.process.returncode}", file=sys.stderr)
                return 1
    finally:
        broker.stop()
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from crypto_assets.validation import validate_symbol
    from streaming_sensor.producer import ProducerOptions, StreamProducer

    settings = args.settings
    _logging(args.verbose)
    symbols = [validate_symbol(s) for s in args.symbols] if args.symbols else None
    options = ProducerOptions.from_settings(
        settings,
        symbols=symbols,
        buffer_limit=args.buffer,
        silence_seconds=args.silence_seconds,
        stats_seconds=args.stats_seconds,
    )
    producer = StreamProducer(options, settings.speed_dir)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await producer.run(stop)

    print(
        f"streaming {', '.join(options.symbols)} from {options.ws_url} to Kafka {options.bootstrap_servers} "
        f"(topics {options.topic_prefix}.kline_1m, {options.topic_prefix}.trade); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    asyncio.run(run())
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    from streaming_sensor.batch_writer import LogMismatch
    from streaming_sensor.stream_job import StopGate, build_session, checkpoint_dir, start_stream, stop_stream

    settings = args.settings
    _logging(args.verbose)
    # Signals are this driver's from the start: a stop while Spark starts up is a clean stop too.
    stop = threading.Event()
    _stop_on_signals(stop)
    spark, jvm = build_session(settings)
    query, gate = None, StopGate()
    try:
        if not stop.is_set():
            query = start_stream(spark, settings, max_offsets_per_trigger=args.max_offsets_per_trigger, gate=gate)
    except LogMismatch as exc:  # the checkpoint and the micro-batch log belong to different runs
        stop_stream(spark, jvm, None)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if query is not None:
        source = "Spark's kafka source" if settings.spark.kafka_jars else "the project's Python Kafka source"
        print(
            f"streaming Kafka {settings.kafka.bootstrap_servers} via {source} into {settings.lake_dir / 'speed'} "
            f"every {settings.stream.trigger_seconds:g}s (checkpoint {checkpoint_dir(settings)}); Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
    try:
        while query is not None and not stop.wait(1.0) and query.isActive:
            pass
    finally:
        if stop.is_set():
            print("stopping after the running micro-batch", file=sys.stderr, flush=True)
        error = stop_stream(spark, jvm, query, gate)
    if error is not None:
        print(f"error: the stream stopped: {error}", file=sys.stderr)
        return 1
    print("stopped", file=sys.stderr, flush=True)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands; each sets ``func`` to a callable taking the parsed args."""
    broker = sub.add_parser(
        "broker", help="run the embedded Kafka-compatible broker (Tansu, in memory) and create the topics"
    )
    broker.add_argument("--port", type=int, default=0, help="listen port on 127.0.0.1 (default: kafka.broker_port)")
    broker.add_argument("--broker-logs", action="store_true", help="show the broker's own log output")
    broker.set_defaults(func=cmd_broker)

    produce = sub.add_parser("produce", help="stream the exchange's kline_1m and trade events into Kafka")
    produce.add_argument("--symbols", nargs="+", help="symbols to stream (default: the configured symbols)")
    produce.add_argument(
        "--buffer", type=int, default=200_000, help="messages held in memory while Kafka is unreachable"
    )
    produce.add_argument(
        "--silence-seconds", type=float, default=30.0, help="reconnect after this long without a message"
    )
    produce.add_argument("--stats-seconds", type=float, default=10.0, help="log the counters this often")
    produce.add_argument("-v", "--verbose", action="store_true")
    produce.set_defaults(func=cmd_produce)

    stream = sub.add_parser("stream", help="run the Spark streaming job: Kafka -> 1-minute candles and daily OHLCV")
    stream.add_argument(
        "--max-offsets-per-trigger", type=int, default=0, help="cap messages per micro-batch (0: no cap)"
    )
    stream.add_argument("-v", "--verbose", action="store_true")
    stream.set_defaults(func=cmd_stream)
