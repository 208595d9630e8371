"""Subcommands of ``crypto-assets`` for this package; :func:`register` adds them to the parser."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands; each sets ``func`` to a callable taking the parsed args."""
