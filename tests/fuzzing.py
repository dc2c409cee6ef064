"""The fuzz tier's harness: generated requests against an ASGI app in-process, counting answers >= 500.

Requests come from schemathesis (cases generated from an OpenAPI document, valid and invalid ones)
or from plain hypothesis strategies; each variant runs a bounded number of examples. Nothing is
raised per example, so one 5xx does not hide the next: the report lists every one, and the test
asserts at the end that there were none. While it runs, connections and name look-ups may only go
to loopback addresses, so no generated host name ever turns into traffic leaving the machine.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

T = TypeVar("T")
MAX_EXAMPLES = 50
# What a report keeps of each 5xx: enough to reproduce it, not the whole answer.
MAX_DESCRIPTION = 600

# An answer: (status, what was sent and what came back, for the report).
Outcome = tuple[int, str]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


@dataclass
class FuzzReport:
    service: str
    started: float = field(default_factory=time.monotonic)
    sent: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    unsatisfiable: list[str] = field(default_factory=list)

    def record(self, label: str, outcome: Outcome) -> None:
        status, description = outcome
        self.sent[label] += 1
        self.statuses[status] += 1
        if status >= 500:
            self.server_errors.append(f"{label}: {description[:MAX_DESCRIPTION]}")

    def run(
        self,
        label: str,
        strategy: st.SearchStrategy[T],
        send: Callable[[T], Outcome],
        *,
        max_examples: int = MAX_EXAMPLES,
    ) -> None:
        """Up to ``max_examples`` examples of ``strategy`` through ``send``; an exception counts as a 500."""

        @given(strategy)
        @settings(
            max_examples=max_examples,
            deadline=None,
            database=None,
            # No failure is raised, so there is nothing to shrink; generation alone is bounded.
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def examples(example: T) -> None:
            try:
                outcome = send(example)
            except Exception as exc:  # noqa: BLE001 - the app raised through the transport: a 500 as a client sees it
                outcome = (500, f"raised {type(exc).__name__}: {exc}")
            self.record(label, outcome)

        try:
            examples()
        except Unsatisfiable:
            # e.g. invalid values for a path parameter that takes any string: nothing to send.
            self.unsatisfiable.append(label)

    def run_operation(
        self,
        operation: Any,
        client: Any,
        suffix: str = "",
        *,
        path_parameters: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """A schemathesis operation's valid and invalid cases through ``client``, as variants of ``suffix``."""
        for mode in MODES:
            self.run(
                f"{operation.label} {mode.value}{suffix}",
                operation.as_strategy(generation_mode=mode, path_parameters=path_parameters),
                lambda case: schemathesis_outcome(case, client, headers=headers),
            )

    @contextmanager
    def printed(self, capsys: pytest.CaptureFixture[str]) -> Iterator[FuzzReport]:
        """The summary goes to the terminal when the block ends, however it ends."""
        try:
            yield self
        finally:
            with capsys.disabled():
                print("\n" + self.summary())

    def assert_no_server_errors(self) -> None:
        """Every POST variant sent all its examples, and no answer was >= 500."""
        assert all(count == MAX_EXAMPLES for label, count in self.sent.items() if label.startswith("POST"))
        assert self.server_errors == [], "\n".join(self.server_errors[:10])

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def summary(self) -> str:
        seconds = time.monotonic() - self.started
        statuses = ", ".join(f"{status}: {count}" for status, count in sorted(self.statuses.items()))
        lines = [
            f"fuzz tier, {self.service}: {self.total} requests over {len(self.sent)} variants in {seconds:.1f} s; "
            f"{len(self.server_errors)} answered >= 500",
            f"  statuses: {statuses}",
        ]
        lines += [f"  {label}: {count}" for label, count in self.sent.items()]
        if self.unsatisfiable:
            lines.append(f"  nothing to generate: {', '.join(self.unsatisfiable)}")
        lines += [f"  5xx: {error}" for error in self.server_errors[:20]]
        return "\n".join(lines)


def schemathesis_outcome(case: Any, client: Any, headers: dict[str, str] | None = None) -> Outcome:
    """Send a schemathesis case through its in-process ASGI client, with ``headers`` added."""
    response = case.call(session=client, headers=headers)
    description = f"{case.method} {case.formatted_path} -> {response.status_code}"
    if response.status_code >= 500:
        description += f": {response.content[:200]!r}; reproduce: {case.as_curl_command()}"
    return response.status_code, description


def json_poster(client: Any, path: str, headers: dict[str, str] | None = None) -> Callable[[Any], Outcome]:
    """What sends a document (or raw bytes as they are) to ``POST path`` as JSON, for ``FuzzReport.run``."""

    def send(document: Any) -> Outcome:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        answer = client.post(
            path, content=body, headers={"Content-Type": "application/json", **(headers or {})}
        )
        return answer.status_code, f"POST {path} {body[:300]!r} -> {answer.status_code}: {answer.text[:200]}"

    return send


def _is_loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).split("%", 1)[0].strip("[]")
    if host in ("localhost", "testserver"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until the test ends: connecting to or resolving anything but loopback raises at once."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def refuse(host: Any) -> OSError:
        return ConnectionRefusedError(f"fuzz tier: no traffic may leave the machine (to {host!r})")

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise refuse(address[0])
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise refuse(address[0])
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_loopback(host):
            raise socket.gaierror(socket.EAI_NONAME, f"fuzz tier: no name look-ups ({host!r})")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# Any JSON document (and NaN/infinities, which json.dumps writes as non-JSON literals).
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, document: Any, *, max_mutations: int = 3) -> Any:
    """``document`` with a few values replaced, removed or added: near-valid input reaches deeper code."""
    import copy

    result = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, max_mutations))):
        path = draw(st.sampled_from(_paths(result)))
        if not path:
            result = draw(JSON_VALUES) if draw(st.booleans()) else result
            continue
        parent = result
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
        elif action == "remove":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(JSON_VALUES)
        else:
            parent.append(draw(JSON_VALUES))
        if not isinstance(result, dict | list):
            break
    return result


# Values that are not JSON the services accept, or that stress the parser: any may be a 500 where
# the reader is not careful (RecursionError, ValueError of int(), NaN stored, text not storable).
HOSTILE_FRAGMENTS = st.one_of(
    st.integers(1, 200_000).map(lambda depth: b"[" * depth),
    st.integers(1, 3_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 3_000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    st.integers(1, 10_000).map(lambda digits: b"9" * digits),
    st.integers(1, 10_000).map(lambda digits: b"-0." + b"1" * digits + b"e-5"),
    st.sampled_from(
        [
            b"NaN",
            b"Infinity",
            b"-Infinity",
            b"1e400",
            b"-1e400",
            b"1" + b"0" * 400,
            b'"\\ud800"',
            b'"\\udfff\\ud800"',
            b'"a\\u0000b"',
            b'{"\\ud800": 1}',
            b'{"a": 1, "a": 2}',
            # A second key of the enclosing object, so it may name a field twice.
            b'1, "schema_version": 1',
        ]
    ),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
)
_SENTINEL = "__fuzz_fragment__"


@st.composite
def hostile_json(draw: st.DrawFn, document: Any) -> bytes:
    """``document`` as JSON text with one of its values (or the whole) replaced by a hostile fragment."""
    import copy

    result = copy.deepcopy(document)
    path = draw(st.sampled_from(_paths(result)))
    if not path:
        return draw(HOSTILE_FRAGMENTS)
    parent = result
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = _SENTINEL
    return json.dumps(result).encode().replace(json.dumps(_SENTINEL).encode(), draw(HOSTILE_FRAGMENTS), 1)
