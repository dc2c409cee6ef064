"""The customer's portal: stable pages and download links that answer 303 to fresh presigned URLs.

The pages and manifest.json are rendered from the stored manifests on each request, with the
links under the order's current token: nothing stored carries one, so a rotation leaves no stale
link behind.

Every miss (unknown or rotated token, unknown version or artifact) is the same 404, so a
response never tells which part of a guessed link was wrong.

A customer's browser (``Accept`` preferring ``text/html``) gets a 404 or 410 under ``/portal`` as a
short page in plain words (``delivery.portal_errors``) with the same status; API clients keep the
JSON problem.

The token in the path is the credential, so every answer under ``/portal/`` (pages, downloads,
404s) carries :data:`PORTAL_HEADERS`: no Referer to the sites the customer goes on to (S3 after a
redirect, too), nothing cached, nothing framed, and a CSP that allows only what the pages use: their
one inline ``<style>`` element; no scripts, images, fonts or forms.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.state import ApiState
from contracts.manifest import MANIFEST_SCHEMA_VERSION, Manifest
from contracts.records import Order, PortalVersion, current_version
from delivery.artifact_store import portal_key
from delivery.manifest_signing import PUBLIC_KEY_NAME, SIGNATURE_NAME
from delivery.portal import (
    MANIFEST_NAME,
    render_portal_index,
    render_version_page,
)
from delivery.portal_errors import WithdrawnVersion, render_link_not_valid, render_version_withdrawn
from delivery.portal_links import PortalLinks, PortalTokens
from delivery.portal_publication import history_of, signing_info, summary_of, with_links
from service_kit.problems import Problem, problem_handlers, problem_response

NOT_FOUND = "not found"
PORTAL_PATH = "/portal"
PORTAL_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # For browsers that predate CSP's frame-ancestors.
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
# Where a browser gets a page instead of the problem: the misses and the withdrawn versions.
PAGE_STATUSES = frozenset({404, 410})
HTML_TYPES = ("text/html", "application/xhtml+xml")
JSON_TYPES = ("application/json", "application/problem+json")


def _under_portal(path: str) -> bool:
    return path == PORTAL_PATH or path.startswith(f"{PORTAL_PATH}/")


class PortalSecurityHeaders:
    """ASGI middleware: :data:`PORTAL_HEADERS` on every response under ``/portal``, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not _under_portal(path):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in PORTAL_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class VersionWithdrawn(Problem):
    """410 for a download under a yanked version; a browser's page also names the newest version."""

    def __init__(self, withdrawn: WithdrawnVersion) -> None:
        super().__init__(410, f"portal version {withdrawn.version} was withdrawn: {withdrawn.reason}")
        self.withdrawn = withdrawn


def prefers_html(accept: str) -> bool:
    """Whether an ``Accept`` header asks for HTML before JSON: a browser, not an API client.

    ``*/*`` alone (curl, requests, most HTTP libraries) is an API client.
    """
    quality: dict[str, float] = {}
    for media_range in accept.lower().split(","):
        media_type, *parameters = (part.strip() for part in media_range.split(";"))
        q = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        quality[media_type] = max(quality.get(media_type, 0.0), q)
    html = max(quality.get(media_type, 0.0) for media_type in HTML_TYPES)
    json_q = max(quality.get(media_type, 0.0) for media_type in JSON_TYPES)
    return html > 0 and html >= json_q


async def portal_problem_response(request: Request, exc: Exception) -> Response:
    """The problem JSON of every error, except a browser's 404 or 410 under ``/portal``: a page."""
    assert isinstance(exc, HTTPException)
    # The path as routed (decoded), as PortalSecurityHeaders tells the portal's answers apart.
    if not _under_portal(request.scope.get("path", "")) or exc.status_code not in PAGE_STATUSES:
        return await problem_response(request, exc)
    if not prefers_html(request.headers.get("accept", "")):
        response: Response = await problem_response(request, exc)
    else:
        support_contact = request.app.state.api.settings.portal.support_contact
        page = (
            render_version_withdrawn(exc.withdrawn, support_contact=support_contact)
            if isinstance(exc, VersionWithdrawn)
            else render_link_not_valid(support_contact=support_contact)
        )
        response = HTMLResponse(page, status_code=exc.status_code, headers=exc.headers)
    # The same URL answers a browser and an API client differently.
    response.headers["Vary"] = "Accept"
    return response


def portal_problem_handlers() -> dict[Any, Callable[[Request, Exception], Any]]:
    """The app's exception handlers: problems as JSON, the portal's misses as pages for browsers."""
    return {**problem_handlers(), HTTPException: portal_problem_response}


def _resolve(state: ApiState, token: str) -> tuple[Order, list[PortalVersion], PortalLinks]:
    cfg_id = PortalTokens.cfg_id_of(token)
    order = state.orders.get(cfg_id) if cfg_id is not None else None
    if order is None or not state.tokens.is_valid(token, order.cfg_id, order.portal_token_generation):
        raise Problem(404, NOT_FOUND)
    versions = state.deliveries.portal_versions(order.cfg_id)
    if not versions:
        raise Problem(404, NOT_FOUND)
    return order, versions, state.portal_links(order)


def _manifest(state: ApiState, order: Order, versions: list[PortalVersion], version: int) -> Manifest:
    return Manifest.model_validate_json(_stored_manifest(state, order, versions, version)).as_stored()


def _stored_manifest(state: ApiState, order: Order, versions: list[PortalVersion], version: int) -> bytes:
    """The version's manifest.json as stored (and signed)."""
    if version not in {v.version for v in versions}:
        raise Problem(404, NOT_FOUND)
    try:
        return state.store.get(portal_key(order.cfg_id, version, MANIFEST_NAME))
    except ClientError as exc:
        # The version is recorded but its manifest is gone from the bucket (e.g. the embedded
        # S3 of a restarted local stack keeps nothing): nothing to serve, not a server error.
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise Problem(404, NOT_FOUND) from None
        raise


def _portal_page(state: ApiState, token: str, version: int | None) -> str:
    order, versions, links = _resolve(state, token)
    history = history_of(versions, links)
    payload = order.configurator_payload()
    # Shown on the live pages the portal link opens, never in the email.
    commissioning_token = state.tokens.commissioning_token(order.cfg_id, order.commissioning_token_generation)
    keys = state.deliveries.signing_keys()
    if version is None:
        current = current_version(versions)
        return render_portal_index(
            latest=None if current is None else _manifest(state, order, versions, current.version),
            order=payload,
            links=links,
            history=history,
            commissioning_token=commissioning_token,
            signing=None if current is None else signing_info(current, keys),
        )
    entry = next((v for v in versions if v.version == version), None)
    manifest = _manifest(state, order, versions, version)
    assert entry is not None  # _manifest answered 404 otherwise
    return render_version_page(
        manifest=manifest,
        order=payload,
        links=links,
        history=history,
        commissioning_token=commissioning_token,
        signing=signing_info(entry, keys),
        yanked=summary_of(entry, links),
    )


async def portal_index(request: Request) -> Response:
    state: ApiState = request.app.state.api
    token = request.path_params["token"]
    page = await run_in_threadpool(_portal_page, state, token, None)
    # Recorded once the page went out: the record never holds up or breaks an answer.
    record = state.download_record.after_answer(request, token, version=None, file=None)
    return HTMLResponse(page, background=record)


async def portal_version(request: Request) -> Response:
    state: ApiState = request.app.state.api
    token, version = request.path_params["token"], request.path_params["version"]
    page = await run_in_threadpool(_portal_page, state, token, version)
    record = state.download_record.after_answer(request, token, version=version, file=None)
    return HTMLResponse(page, background=record)


def _download(state: ApiState, token: str, version: int, name: str) -> Response:
    order, versions, links = _resolve(state, token)
    stored = _stored_manifest(state, order, versions, version)
    manifest = Manifest.model_validate_json(stored).as_stored()
    entry = next(v for v in versions if v.version == version)
    if entry.yank_reason is not None:
        # Gone on purpose, not missing: the customer learns why (and that no retry will help).
        current = current_version(versions)
        raise VersionWithdrawn(
            WithdrawnVersion(
                version=version,
                reason=entry.yank_reason,
                current_version=None if current is None else current.version,
                portal_url=links.portal(),
            )
        )
    if name == MANIFEST_NAME:
        if json.loads(stored).get("schema_version") == MANIFEST_SCHEMA_VERSION:
            # The signed bytes themselves, or manifest.json.sig would not verify. An artifact's link
            # is its name resolved against this URL, as in a copy of the version folder.
            return Response(stored, media_type="application/json")
        # An earlier schema's manifest (unsigned, with the links of then): served as stored now.
        return JSONResponse(with_links(manifest, links).model_dump(mode="json"))
    if name in (SIGNATURE_NAME, PUBLIC_KEY_NAME) and entry.signing_key_id is not None:
        media_type = "application/octet-stream" if name == SIGNATURE_NAME else "application/x-pem-file"
        return Response(state.store.get(portal_key(order.cfg_id, version, name)), media_type=media_type)
    artifact = next((a for a in manifest.artifacts if a.name == name), None)
    if artifact is None:
        raise Problem(404, NOT_FOUND)
    url = state.presigner.presigned_url(artifact.key, expires_seconds=state.settings.portal.presign_seconds)
    return RedirectResponse(url, status_code=303)


async def portal_download(request: Request) -> Response:
    state: ApiState = request.app.state.api
    params = request.path_params
    response = await run_in_threadpool(_download, state, params["token"], params["version"], params["name"])
    response.background = state.download_record.after_answer(
        request, params["token"], version=params["version"], file=params["name"]
    )
    return response
