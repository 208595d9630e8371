"""Per-symbol listings in logs, metadata, checks and ``status`` stay short whatever the number of symbols."""

from __future__ import annotations

from collections.abc import Sequence

# At most this many symbols are named: with 50 a full list buries the one that matters, so callers put the
# worst first and the rest are counted.
MAX_LISTED = 10


def truncated(items: Sequence[str], limit: int = MAX_LISTED) -> list[str]:
    """The first ``limit`` items, then "… and N more" if there were more."""
    if len(items) <= limit:
        return list(items)
    return [*items[:limit], f"… and {len(items) - limit} more"]
