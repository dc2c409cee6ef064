"""The customer's portal: stable pages and download links that answer 303 to fresh presigned URLs.

Every miss (unknown or rotated token, unknown version or artifact) is the same 404, so a
response never tells which part of a guessed link was wrong.
"""

from __future__ import annotations

from botocore.exceptions import ClientError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from service_kit.problems import Problem
from api.state import ApiState
from contracts.manifest import Manifest
from delivery.portal import render_portal_index, render_version_page
from delivery.portal_links import PortalLinks, PortalTokens
from delivery.portal_publication import history_of, load_manifest, with_links
from platform_db import Order
from platform_db.deliveries import PortalVersion

NOT_FOUND = "not found"
NO_STORE = {"Cache-Control": "no-store"}


def _resolve(state: ApiState, token: str) -> tuple[Order, list[PortalVersion], PortalLinks]:
    cfg_id = PortalTokens.cfg_id_of(token)
    order = state.orders.get(cfg_id) if cfg_id is not None else None
    if order is None or not state.tokens.is_valid(token, order.cfg_id, order.portal_token_generation):
        raise Problem(404, NOT_FOUND)
    versions = state.deliveries.portal_versions(order.cfg_id)
    if not versions:
        raise Problem(404, NOT_FOUND)
    return order, versions, state.portal_links(order)


def _manifest(state: ApiState, order: Order, versions: list[PortalVersion], version: int, links: PortalLinks) -> Manifest:
    if version not in {v.version for v in versions}:
        raise Problem(404, NOT_FOUND)
    try:
        return with_links(load_manifest(state.store, order.cfg_id, version), links)
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
    if version is None:
        latest = _manifest(state, order, versions, versions[-1].version, links)
        return render_portal_index(latest=latest, order=payload, history=history)
    return render_version_page(manifest=_manifest(state, order, versions, version, links), order=payload, history=history)


async def portal_index(request: Request) -> Response:
    state: ApiState = request.app.state.api
    page = await run_in_threadpool(_portal_page, state, request.path_params["token"], None)
    return HTMLResponse(page, headers=NO_STORE)


async def portal_version(request: Request) -> Response:
    state: ApiState = request.app.state.api
    page = await run_in_threadpool(_portal_page, state, request.path_params["token"], request.path_params["version"])
    return HTMLResponse(page, headers=NO_STORE)


def _download(state: ApiState, token: str, version: int, name: str) -> Response:
    order, versions, links = _resolve(state, token)
    manifest = _manifest(state, order, versions, version, links)
    if name == "manifest.json":
        return JSONResponse(manifest.model_dump(mode="json"), headers=NO_STORE)
    artifact = next((a for a in manifest.artifacts if a.name == name), None)
    if artifact is None:
        raise Problem(404, NOT_FOUND)
    return RedirectResponse(state.presigner.presigned_url(artifact.key), status_code=303, headers=NO_STORE)


async def portal_download(request: Request) -> Response:
    state: ApiState = request.app.state.api
    params = request.path_params
    return await run_in_threadpool(_download, state, params["token"], params["version"], params["name"])
