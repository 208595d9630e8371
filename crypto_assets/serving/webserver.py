"""The Dagster webserver's GraphQL API on 127.0.0.1: the public interface to what the UI shows (daemon health,
freshness, runs), for ``up``'s watchdog, ``status`` and the tests that look at the UI's data."""

from __future__ import annotations

import json
import urllib.request


def graphql(port: int, query: str, variables: dict | None = None, timeout: float = 30.0) -> dict:
    """The ``data`` of a query to the Dagster webserver on 127.0.0.1:``port``; GraphQL errors raise."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", body, {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        payload = json.loads(answer.read())
    if payload.get("errors"):
        raise RuntimeError(f"GraphQL errors: {payload['errors']}")
    return payload["data"]
