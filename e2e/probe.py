"""The harness's eyes inside the namespace: ``ip netns exec <ns> python -m e2e.probe``.

Reads one JSON request per line from stdin and answers one JSON line on stdout:

- ``{"op": "http", "method": "GET", "url": "...", "body": <json or null>, "headers": {...}, "timeout": 5}``
  -> ``{"status": 200, "body": "<text>"}``
- ``{"op": "tcp", "host": "meter-1", "port": 502, "timeout": 1}`` -> ``{"open": true}``
  (the name resolves through the namespace's hosts file, as the gateway's lookups do)

Failures answer ``{"error": "..."}``; the probe ends at end of input. Standard library only.
"""

from __future__ import annotations

import json
import socket
import sys
import urllib.error
import urllib.request
from typing import Any


def http(request: dict[str, Any]) -> dict[str, Any]:
    body = request.get("body")
    data = None if body is None else json.dumps(body).encode("utf-8")
    outgoing = urllib.request.Request(
        request["url"],
        data=data,
        method=request.get("method", "GET"),
        headers={
            **({"Content-Type": "application/json"} if data is not None else {}),
            **request.get("headers", {}),
        },
    )
    try:
        with urllib.request.urlopen(outgoing, timeout=float(request.get("timeout", 5))) as response:
            return {"status": response.status, "body": response.read().decode("utf-8", "replace")}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": exc.read().decode("utf-8", "replace")}


def tcp(request: dict[str, Any]) -> dict[str, Any]:
    try:
        with socket.create_connection(
            (request["host"], int(request["port"])), timeout=float(request.get("timeout", 1))
        ):
            return {"open": True}
    except OSError as exc:
        return {"open": False, "reason": str(exc)}


def main() -> int:
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            answer = tcp(request) if request.get("op") == "tcp" else http(request)
        except Exception as exc:  # noqa: BLE001 - every request gets an answer, whatever went wrong
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
