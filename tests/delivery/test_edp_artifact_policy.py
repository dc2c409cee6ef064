"""The EDP artifact policy against a real HTTP server on loopback: what it fetches, how far, how much, how long."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from functools import partial
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import urllib3.util.connection

from contracts.edp import EdpArtifact
from delivery import edp_artifact_policy
from delivery.edp_artifact_policy import (
    ByteLimit,
    EdpArtifactDownloader,
    EdpArtifactError,
    address_refusal,
    readable_reason,
)
from tests.delivery.conftest import QUERY, QUERY_SECRETS, ArtifactServer, Route
from tests.delivery.conftest import artifact_policy as policy

DEADLINE = 1.0
# A refused slow download ends at the deadline; this leaves room for a loaded machine, not for a drip.
DEADLINE_SLACK = 1.5
LIMIT = ByteLimit(max_bytes=1000, rule="edp.max_artifact_bytes", scope="the limit per artifact")


def artifact(url: str, name: str = "firmware.bin") -> EdpArtifact:
    return EdpArtifact(name=name, url=url)


def refused(call: Callable[[], object], *expected: str) -> str:
    """The refusal's text, which names what is expected and repeats nothing of the URL's query."""
    with pytest.raises(EdpArtifactError) as caught:
        call()
    message = str(caught.value)
    for part in expected:
        assert part in message, message
    for secret in QUERY_SECRETS:
        assert secret not in message, message
    return message


# --- hosts and schemes ------------------------------------------------------------------------


def test_an_artifact_on_edps_own_host_is_fetched(edp_host: ArtifactServer) -> None:
    edp_host.body("/firmware.bin", b"firmware")

    data = EdpArtifactDownloader(policy(edp_host.base_url)).download(
        artifact(edp_host.url("/firmware.bin")), LIMIT
    )

    assert data == b"firmware"


def test_a_loopback_target_is_refused_unless_private_hosts_are_allowed(edp_host: ArtifactServer) -> None:
    edp_host.body("/firmware.bin", b"firmware")
    strict = EdpArtifactDownloader(policy(edp_host.base_url, allow_private_hosts=False))

    refused(
        lambda: strict.download(artifact(edp_host.url("/firmware.bin")), LIMIT),
        "firmware.bin",
        "loopback",
        "edp.allow_private_artifact_hosts",
    )
    assert edp_host.requests == [], "a refused address is never connected to"


def test_a_host_name_is_refused_when_it_resolves_to_loopback(edp_host: ArtifactServer) -> None:
    url = edp_host.url("/firmware.bin").replace("127.0.0.1", "localhost")
    strict = EdpArtifactDownloader(policy(url, allow_private_hosts=False))

    refused(lambda: strict.download(artifact(url), LIMIT), "firmware.bin", "host localhost", "loopback")
    assert edp_host.requests == []


def _never_connect(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("connected to an address the policy refuses")


@pytest.mark.parametrize(
    ("addresses", "rule"),
    [
        (["10.20.0.11"], "private"),
        (["192.168.1.5"], "private"),
        (["169.254.169.254"], "link-local"),  # the cloud metadata service
        (["fe80::1"], "link-local"),
        (["240.0.0.1"], "reserved"),
        (["0.0.0.0"], "unspecified"),
        (["::ffff:127.0.0.1"], "loopback"),
        # Every address counts: a resolver that also answers a private one may hand out that one.
        (["93.184.215.14", "10.0.0.7"], "private"),
    ],
)
def test_every_address_a_host_resolves_to_must_be_public(
    monkeypatch: pytest.MonkeyPatch, addresses: list[str], rule: str
) -> None:
    monkeypatch.setattr(
        edp_artifact_policy, "resolve_host", lambda host, port: [ipaddress.ip_address(a) for a in addresses]
    )
    monkeypatch.setattr(urllib3.util.connection, "create_connection", _never_connect)
    url = f"https://files.edp.example.com/job/firmware.bin{QUERY}"
    strict = EdpArtifactDownloader(
        policy(
            "https://edp.example.com", artifact_hosts=("files.edp.example.com",), allow_private_hosts=False
        )
    )

    refused(
        lambda: strict.download(artifact(url), LIMIT),
        "firmware.bin",
        "files.edp.example.com",
        f"a {rule} address",
    )


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "non-public"),  # carrier-grade NAT
        ("::ffff:10.0.0.1", "private"),
        ("93.184.215.14", None),
        ("2606:4700::6810:84e5", None),
    ],
)
def test_address_rules(address: str, rule: str | None) -> None:
    assert address_refusal(ipaddress.ip_address(address)) == rule


def test_another_service_on_the_same_host_is_refused(
    edp_host: ArtifactServer, internal_service: ArtifactServer
) -> None:
    # In local/demo, private targets are allowed, yet only EDP's own port: not moto, the API or Dagster.
    downloader = EdpArtifactDownloader(policy(edp_host.base_url))

    message = refused(
        lambda: downloader.download(artifact(internal_service.url("/secret")), LIMIT),
        "firmware.bin",
        f"127.0.0.1:{internal_service.httpd.server_port}",
        "edp.artifact_hosts",
    )
    assert "its URL" in message
    assert internal_service.requests == []


def test_a_host_that_is_not_edps_nor_listed_is_refused_before_any_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(edp_artifact_policy, "resolve_host", _never_connect)
    monkeypatch.setattr(urllib3.util.connection, "create_connection", _never_connect)
    downloader = EdpArtifactDownloader(
        policy("https://edp.example.com", artifact_hosts=("files.edp.example.com",))
    )

    for url in (
        f"https://attacker.example.net/dtm.json{QUERY}",
        f"https://edp.example.com.attacker.example.net/dtm.json{QUERY}",
        f"https://edp.example.com@attacker.example.net/dtm.json{QUERY}",
        f"https://edp.example.com:8443/dtm.json{QUERY}",  # EDP's host, another port
        f"http://edp.example.com/dtm.json{QUERY}",  # EDP's host over http: port 80, not 443
    ):
        refused(partial(downloader.download, artifact(url), LIMIT), "firmware.bin", "edp.artifact_hosts")


def test_a_listed_artifact_host_takes_its_own_port_or_the_schemes_default() -> None:
    rules = policy("https://edp.example.com", artifact_hosts=("files.example.com", "[2001:db8::1]:9000"))

    rules.check_url("a", "https://files.example.com/a")
    rules.check_url("a", "http://files.example.com/a")
    rules.check_url("a", "https://FILES.example.com./a")
    rules.check_url("a", "http://[2001:db8::1]:9000/a")
    with pytest.raises(EdpArtifactError):
        rules.check_url("a", "https://files.example.com:8443/a")
    with pytest.raises(EdpArtifactError):
        rules.check_url("a", "http://[2001:db8::1]/a")


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://edp.example.com/dtm.json",
        "gopher://edp.example.com:70/_GET",
        "dict://edp.example.com:11211/stat",
        "/edp-api/jobs/1/artifacts/dtm.json",
        "edp.example.com/dtm.json",
    ],
)
def test_only_http_and_https_are_fetched(url: str) -> None:
    downloader = EdpArtifactDownloader(policy("https://edp.example.com"))

    refused(lambda: downloader.download(artifact(url + QUERY), LIMIT), "firmware.bin", "refused")


def test_a_malformed_url_is_refused_readably() -> None:
    refused(
        lambda: policy("https://edp.example.com").check_url(
            "dtm.json", f"https://edp.example.com:99999/x{QUERY}"
        ),
        "dtm.json",
        "not a valid URL",
    )


# --- redirects --------------------------------------------------------------------------------


def test_a_redirect_within_edps_host_is_followed(edp_host: ArtifactServer) -> None:
    edp_host.redirect("/firmware.bin", f"/storage/firmware.bin{QUERY}")
    edp_host.body("/storage/firmware.bin", b"firmware")

    data = EdpArtifactDownloader(policy(edp_host.base_url)).download(
        artifact(edp_host.url("/firmware.bin")), LIMIT
    )

    assert data == b"firmware"
    assert edp_host.requests == ["/firmware.bin", "/storage/firmware.bin"]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_host_is_refused_before_it_is_followed(
    edp_host: ArtifactServer, internal_service: ArtifactServer, status: int
) -> None:
    edp_host.redirect("/firmware.bin", internal_service.url("/secret"), status)

    refused(
        lambda: EdpArtifactDownloader(policy(edp_host.base_url)).download(
            artifact(edp_host.url("/firmware.bin")), LIMIT
        ),
        "firmware.bin",
        "redirect 1",
        f"127.0.0.1:{internal_service.httpd.server_port}",
        "edp.artifact_hosts",
    )
    assert internal_service.requests == []


def test_a_redirect_to_another_scheme_is_refused(edp_host: ArtifactServer) -> None:
    edp_host.redirect("/firmware.bin", "file:///etc/passwd")

    refused(
        lambda: EdpArtifactDownloader(policy(edp_host.base_url)).download(
            artifact(edp_host.url("/firmware.bin")), LIMIT
        ),
        "redirect 1",
        "'file'",
    )


def test_redirects_are_followed_only_up_to_the_hop_limit(edp_host: ArtifactServer) -> None:
    for hop in range(10):
        edp_host.redirect(f"/hop/{hop}", f"/hop/{hop + 1}{QUERY}")

    refused(
        lambda: EdpArtifactDownloader(policy(edp_host.base_url, max_redirects=2)).download(
            artifact(edp_host.url("/hop/0")), LIMIT
        ),
        "firmware.bin",
        "more than 2 redirects",
        "edp.max_artifact_redirects",
    )
    assert edp_host.requests == ["/hop/0", "/hop/1", "/hop/2"]


# --- sizes ------------------------------------------------------------------------------------


def test_an_announced_content_length_over_the_cap_is_refused_before_the_body(
    edp_host: ArtifactServer,
) -> None:
    edp_host.stream("/firmware.bin", total=1_000_000, announce=300 * 1024 * 1024)

    refused(
        lambda: EdpArtifactDownloader(policy(edp_host.base_url)).download(
            artifact(edp_host.url("/firmware.bin")), LIMIT
        ),
        "firmware.bin",
        f"announces {300 * 1024 * 1024} bytes",
        "edp.max_artifact_bytes",
    )


@pytest.mark.parametrize("chunked", [False, True], ids=["until-close", "chunked"])
def test_a_body_over_the_cap_is_refused_while_it_streams(edp_host: ArtifactServer, chunked: bool) -> None:
    # 300 MiB on offer without Content-Length; the downloader stops after the cap and one read.
    total = 300 * 1024 * 1024
    edp_host.stream("/firmware.bin", total=total, chunked=chunked)

    refused(
        lambda: EdpArtifactDownloader(policy(edp_host.base_url)).download(
            artifact(edp_host.url("/firmware.bin")), LIMIT
        ),
        "firmware.bin",
        "edp.max_artifact_bytes",
    )
    assert edp_host.bytes_sent < total


def test_a_body_at_the_cap_is_taken_whole(edp_host: ArtifactServer) -> None:
    edp_host.stream("/firmware.bin", total=LIMIT.max_bytes)

    data = EdpArtifactDownloader(policy(edp_host.base_url)).download(
        artifact(edp_host.url("/firmware.bin")), LIMIT
    )

    assert len(data) == LIMIT.max_bytes


def test_a_compressed_answer_is_refused(edp_host: ArtifactServer) -> None:
    edp_host.body("/firmware.bin", b"\x1f\x8b not really", headers={"Content-Encoding": "gzip"})

    refused(
        lambda: EdpArtifactDownloader(policy(edp_host.base_url)).download(
            artifact(edp_host.url("/firmware.bin")), LIMIT
        ),
        "firmware.bin",
        "compressed",
    )


def test_the_tightest_byte_limit_applies() -> None:
    rules = policy("https://edp.example.com", max_artifact_bytes=1000, max_dtm_bytes=500, max_job_bytes=1500)

    assert rules.byte_limit("firmware.bin", 0) == ByteLimit(
        max_bytes=1000, rule="edp.max_artifact_bytes", scope="the limit per artifact"
    )
    assert rules.byte_limit("dtm.json", 0).rule == "edp.max_dtm_bytes"
    assert rules.byte_limit("dtm.json", 0).max_bytes == 500
    assert rules.byte_limit("firmware.bin", 1200).max_bytes == 300
    assert rules.byte_limit("firmware.bin", 1200).rule == "edp.max_job_bytes"
    assert rules.byte_limit("firmware.bin", 2000).max_bytes == 0


def test_too_many_artifacts_are_refused_as_a_whole() -> None:
    rules = policy("https://edp.example.com", max_artifacts=2)
    listing = [artifact(f"https://edp.example.com/{n}{QUERY}", n) for n in ("dtm.json", "a.bin", "b.bin")]

    refused(lambda: rules.check_listing("job-1", listing), "job-1", "lists 3 artifacts", "edp.max_artifacts")


def test_a_listing_naming_one_artifact_twice_is_refused() -> None:
    listing = [artifact(f"https://edp.example.com/{n}{QUERY}", "dtm.json") for n in ("1", "2")]

    refused(
        lambda: policy("https://edp.example.com").check_listing("job-1", listing),
        "dtm.json",
        "more than once",
    )


def test_a_listing_with_one_foreign_url_is_refused_naming_that_artifact() -> None:
    listing = [
        artifact(f"https://edp.example.com/dtm.json{QUERY}", "dtm.json"),
        artifact(f"http://169.254.169.254/latest/meta-data/{QUERY}", "notes.txt"),
    ]

    refused(
        lambda: policy("https://edp.example.com").check_listing("job-1", listing),
        "notes.txt",
        "169.254.169.254:80",
    )


# --- the deadline -----------------------------------------------------------------------------


def _timed_refusal(downloader: EdpArtifactDownloader, url: str, *expected: str) -> float:
    started = time.monotonic()
    refused(lambda: downloader.download(artifact(url), LIMIT), *expected)
    return time.monotonic() - started


def test_a_slow_drip_is_cut_off_at_the_deadline(edp_host: ArtifactServer) -> None:
    # 100 bytes at 0.1 s each: every read answers within the 2 s socket timeout, the whole takes 10 s.
    edp_host.drip("/firmware.bin", total=100, interval=0.1)

    elapsed = _timed_refusal(
        EdpArtifactDownloader(policy(edp_host.base_url, timeout_seconds=2.0)),
        edp_host.url("/firmware.bin"),
        "firmware.bin",
        "not complete within 1 s",
        "edp.download_deadline_seconds",
    )

    assert DEADLINE <= elapsed < DEADLINE + DEADLINE_SLACK


def _dripping_headers(edp_host: ArtifactServer) -> str:
    edp_host.drip("/firmware.bin", total=200, interval=0.05, headers_too=True)
    return "/firmware.bin"


def _an_answer_later_than_the_deadline(edp_host: ArtifactServer) -> str:
    edp_host.late("/firmware.bin", delay=5.0, data=b"firmware")
    return "/firmware.bin"


def _redirects_each_in_time(edp_host: ArtifactServer) -> str:
    # Each hop answers in 0.4 s, well within the socket timeout; together they outlast the deadline.
    for hop in range(3):
        edp_host.routes[f"/hop/{hop}"] = _late_redirect(f"/hop/{hop + 1}")
    edp_host.body("/hop/3", b"firmware")
    return "/hop/0"


def _late_redirect(target: str) -> Route:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(0.4)
        handler.send_response(302)
        handler.send_header("Location", target + QUERY)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


@pytest.mark.parametrize(
    ("serve", "limits"),
    [
        pytest.param(_dripping_headers, {"retries": 3}, id="dripping headers"),
        pytest.param(_an_answer_later_than_the_deadline, {"timeout_seconds": 10.0}, id="a late answer"),
        pytest.param(_redirects_each_in_time, {"max_redirects": 5}, id="redirects"),
    ],
)
def test_the_deadline_cuts_off(
    edp_host: ArtifactServer, serve: Callable[[ArtifactServer], str], limits: dict[str, Any]
) -> None:
    elapsed = _timed_refusal(
        EdpArtifactDownloader(policy(edp_host.base_url, **limits)),
        edp_host.url(serve(edp_host)),
        "edp.download_deadline_seconds",
    )

    assert elapsed < DEADLINE + DEADLINE_SLACK


# --- failures are readable --------------------------------------------------------------------


def test_an_http_error_names_the_status_and_not_the_body(edp_host: ArtifactServer) -> None:
    edp_host.body("/firmware.bin", b"<Error>AccessDenied for AKIDSECRETCREDENTIAL</Error>", status=403)

    message = refused(
        lambda: EdpArtifactDownloader(policy(edp_host.base_url)).download(
            artifact(edp_host.url("/firmware.bin")), LIMIT
        ),
        "firmware.bin",
        "HTTP 403",
    )
    assert "AccessDenied" not in message


def test_a_host_that_does_not_answer_is_named_by_kind_not_url(free_port: Callable[[], int]) -> None:
    base = f"http://127.0.0.1:{free_port()}"

    refused(
        lambda: EdpArtifactDownloader(policy(base, retries=1)).download(
            artifact(f"{base}/firmware.bin{QUERY}"), LIMIT
        ),
        "firmware.bin",
        "download failed (ConnectionError)",
    )


def test_transient_errors_are_retried_within_the_deadline(edp_host: ArtifactServer) -> None:
    answers = iter([503, 200])

    def flaky(handler: BaseHTTPRequestHandler) -> None:
        status = next(answers)
        data = b"firmware" if status == 200 else b"busy"
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    edp_host.routes["/firmware.bin"] = flaky

    data = EdpArtifactDownloader(policy(edp_host.base_url, retries=2)).download(
        artifact(edp_host.url("/firmware.bin")), LIMIT
    )

    assert data == b"firmware"


def test_readable_reason_drops_what_urls_carry_besides_their_path() -> None:
    text = (
        "fetch failed: https://user:pw@bucket.s3.amazonaws.com/orders/dtm.json?X-Amz-Signature=abc&X-Amz-Credential=AKID#frag"
        " and /relative/path?token=s3cr3t\n\x00next line"
    )

    reason = readable_reason(text)

    assert (
        reason == "fetch failed: https://bucket.s3.amazonaws.com/orders/dtm.json and /relative/path next line"
    )


def test_readable_reason_is_capped() -> None:
    reason = readable_reason("x" * 10_000, limit=100)

    assert len(reason) == 100
    assert reason.endswith("…")
