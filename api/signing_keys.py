"""The public keys that sign portal manifests, at stable URLs outside any customer token.

``GET /signing-keys`` lists every key that ever signed (a rotated key stays, so the versions it
signed stay verifiable) and which one signs now; ``GET /signing-keys/{key_id}.pem`` is one key, the
file ``openssl pkeyutl -verify -pubin -inkey`` takes.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.state import ApiState
from delivery.manifest_signing import fingerprint_of
from delivery.portal_links import public_key_url
from service_kit.problems import Problem


class SigningKeyView(BaseModel):
    key_id: str
    fingerprint: str
    url: str
    first_used_at: datetime


class SigningKeys(BaseModel):
    """Every public key that signed a portal manifest, oldest first; ``current`` signed the newest manifest."""

    current: str | None
    keys: list[SigningKeyView]


def _keys(state: ApiState) -> SigningKeys:
    base_url = state.settings.api.public_url
    keys = [
        SigningKeyView(
            key_id=key.key_id,
            fingerprint=fingerprint_of(key.public_key_pem.encode()),
            url=public_key_url(base_url, key.key_id),
            first_used_at=key.first_used_at,
        )
        for key in state.deliveries.signing_keys()
    ]
    # The API holds no private key: the current one is the key that signed most recently.
    newest = state.deliveries.newest_signing_key_id()
    return SigningKeys(current=newest, keys=keys)


async def signing_keys(request: Request) -> JSONResponse:
    state: ApiState = request.app.state.api
    listed = await run_in_threadpool(_keys, state)
    return JSONResponse(listed.model_dump(mode="json"))


async def signing_key_pem(request: Request) -> Response:
    state: ApiState = request.app.state.api
    key_id = request.path_params["key_id"]
    keys = await run_in_threadpool(state.deliveries.signing_keys)
    key = next((k for k in keys if k.key_id == key_id), None)
    if key is None:
        raise Problem(404, "no signing key with this id")
    return Response(key.public_key_pem, media_type="application/x-pem-file")
