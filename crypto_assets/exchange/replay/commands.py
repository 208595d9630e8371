"""Subcommands of ``crypto-assets`` for this package; :func:`register` adds them to the parser.

``crypto-assets exchange-replay`` serves recorded, lake or synthetic candles like Binance until SIGTERM/Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import UTC, datetime


def _start_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    if text == "now":
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--start: expected an ISO time like 2021-03-26T03:00 or 'now', got {text!r}"
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _market(args: argparse.Namespace, settings):
    from crypto_assets.exchange.replay.market import Market
    from crypto_assets.validation import validate_symbol

    symbols = [validate_symbol(s) for s in args.symbols] if args.symbols else None
    if args.source:
        return Market.from_sources(args.source, symbols or settings.symbol_names, args.source_symbol)
    if args.lake is not None:
        return Market.from_lake(args.lake or settings.lake_dir, symbols)
    return Market.synthetic(
        args.scale or settings.synthetic_scale, settings.synthetic_seed if args.seed is None else args.seed, symbols
    )


def cmd_exchange_replay(args: argparse.Namespace) -> int:
    from crypto_assets.exchange.replay.market import MarketError
    from crypto_assets.exchange.replay.server import ReplayServer

    settings = args.settings
    try:
        market = _market(args, settings)
    except MarketError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = ReplayServer(
        market,
        host=args.host,
        port=args.port,
        ws_port=args.ws_port,
        start=_start_time(args.start),
        speed=args.speed,
        weight_limit=args.weight_limit or settings.exchange.weight_limit_per_minute,
        weight_window_seconds=args.weight_window,
        ban_seconds=args.ban_seconds,
        trades_per_minute=args.trades_per_minute,
    )

    async def run() -> None:
        await server.start_async()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: loop.create_task(server.stop_async()))
        print(server.banner, flush=True)
        print(
            f"replaying {market.description}: {', '.join(market.symbols)} from {server.clock.now():%Y-%m-%d %H:%M:%S} UTC "
            f"at {args.speed:g}x; faults: POST {server.rest_url}/_replay/faults (Content-Type: application/json)",
            file=sys.stderr,
            flush=True,
        )
        await server.serve_until_stopped()

    asyncio.run(run())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands; each sets ``func`` to a callable taking the parsed args."""
    replay = sub.add_parser(
        "exchange-replay",
        help="serve candles like Binance (REST klines + WebSocket streams) on 127.0.0.1 for tests and the demo",
        description=(
            "Stand in for Binance: /api/v3/klines, /api/v3/time, /api/v3/ping and the kline_1m/trade market streams, "
            "from recorded files (--source), a lake's minute_raw (--lake) or the synthetic market (default). "
            "Prints one line 'REST http://HOST:PORT  WS ws://HOST:PORT' when ready; stops on SIGTERM or Ctrl-C."
        ),
    )
    data = replay.add_mutually_exclusive_group()
    data.add_argument(
        "--source", action="append", metavar="PATH", help="recorded 1-minute files, directories or globs (repeatable)"
    )
    data.add_argument(
        "--lake", nargs="?", const="", metavar="DIR", help="serve minute_raw of this lake (default: the project's lake)"
    )
    replay.add_argument("--source-symbol", help="symbol of --source files whose names do not start with it")
    replay.add_argument("--symbols", nargs="+", metavar="SYMBOL", help="serve only these symbols")
    replay.add_argument("--scale", choices=["tiny", "small", "full"], help="synthetic history (default: the project's)")
    replay.add_argument("--seed", type=int, help="synthetic seed (default: the project's)")
    replay.add_argument(
        "--start",
        help="replay clock start, ISO UTC or 'now' (default: now for synthetic data, the end of a recording otherwise)",
    )
    replay.add_argument("--speed", type=float, default=1.0, help="replay clock speed, N x real time (default 1)")
    replay.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    replay.add_argument("--port", type=int, default=0, help="REST port (default 0: pick a free one)")
    replay.add_argument("--ws-port", type=int, default=0, help="WebSocket port (default 0: pick a free one)")
    replay.add_argument(
        "--weight-limit", type=int, help="request weight per window (default: exchange.weight_limit_per_minute)"
    )
    replay.add_argument(
        "--weight-window", type=float, default=60.0, help="weight window in seconds (default 60, as Binance)"
    )
    replay.add_argument(
        "--ban-seconds", type=float, default=120.0, help="418 ban for clients that ignore a 429 (default 120)"
    )
    replay.add_argument(
        "--trades-per-minute", type=int, default=12, help="synthesized trades per candle with volume (default 12)"
    )
    replay.set_defaults(func=cmd_exchange_replay)
