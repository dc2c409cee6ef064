"""The public keys that sign portal manifests, at stable URLs outside any customer token.

``GET /signing-keys`` lists every key that ever signed (a rotated key stays, so the versions it
signed stay verifiable), which one signs now, and which were revoked from when; saved to a file it
is the key list ``portal_verify --keys`` takes. ``GET /signing-keys/{key_id}.pem`` is one key, the
file ``openssl pkeyutl -verify -pubin -inkey`` takes. ``POST /signing-keys/{key_id}/revoke``
(operators) revokes a key from a moment on: a lost or leaked key, whose signatures made from then
on are refused by the verifier, while what it signed before stays good.
"""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.operator_calls import Answer, answer_once, keyed_response
from api.orders import read_keyed_request
from api.state import ApiState
from contracts.records import SigningKey
from delivery.manifest_signing import fingerprint_of
from delivery.portal_links import public_key_url
from service_kit.problems import Problem

MAX_REASON_CHARS = 500


class SigningKeyView(BaseModel):
    key_id: str
    fingerprint: str
    url: str
    first_used_at: datetime
    # Signatures made at or after this moment are refused (portal_verify --keys).
    revoked_at: datetime | None = None
    revocation_reason: str | None = None
    public_key: Annotated[str, Field(description="The key as PEM (SubjectPublicKeyInfo), as at url")]


class RevokeRequest(BaseModel):
    """Why the key is revoked, and from when: the moment it may have leaked (default: now)."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=MAX_REASON_CHARS)]
    compromised_since: AwareDatetime | None = None


class SigningKeys(BaseModel):
    """Every public key that signed a portal manifest, oldest first; ``current`` signed the newest manifest."""

    current: str | None
    keys: list[SigningKeyView]


def _keys(state: ApiState) -> SigningKeys:
    keys = [_view(state, key) for key in state.deliveries.signing_keys()]
    # The API holds no private key: the current one is the key that signed most recently.
    newest = state.deliveries.newest_signing_key_id()
    return SigningKeys(current=newest, keys=keys)


def _view(state: ApiState, key: SigningKey) -> SigningKeyView:
    return SigningKeyView(
        key_id=key.key_id,
        fingerprint=fingerprint_of(key.public_key_pem.encode()),
        url=public_key_url(state.settings.api.public_url, key.key_id),
        first_used_at=key.first_used_at,
        revoked_at=key.revoked_at,
        revocation_reason=key.revocation_reason,
        public_key=key.public_key_pem,
    )


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


# The customer's verifier is one file with only the standard library and cryptography: served as
# it is, so what a customer runs is what the repository holds.
def _verify_tool_path() -> Path:
    # Found, not imported: the API has no use for its code.
    spec = importlib.util.find_spec("portal_verify.__main__")
    if spec is None or spec.origin is None:
        raise Problem(404, "the verify tool is not installed with this API")
    return Path(spec.origin)


async def verify_tool(request: Request) -> Response:
    data = await run_in_threadpool(lambda: _verify_tool_path().read_bytes())
    return Response(data, media_type="text/x-python; charset=utf-8")


def _revoke(state: ApiState, key_id: str, body: RevokeRequest) -> Answer:
    # "now" is the first request's: a repeated Idempotency-Key answers that revocation.
    revoked_at = body.compromised_since or datetime.now(UTC)
    revoked = state.deliveries.revoke_signing_key(key_id, revoked_at=revoked_at, reason=body.reason)
    if revoked is None:
        raise Problem(404, "no signing key with this id")
    return Answer(200, _view(state, revoked).model_dump(mode="json"))


def _revoke_once(state: ApiState, idempotency_key: str, key_id: str, body: RevokeRequest) -> Answer:
    # Checked before the Idempotency-Key is claimed: only a key that signed names a call.
    if not any(key.key_id == key_id for key in state.deliveries.signing_keys()):
        raise Problem(404, "no signing key with this id")
    what = f"POST /signing-keys/{key_id}/revoke"
    return answer_once(state, idempotency_key, what, body, lambda: _revoke(state, key_id, body))


async def revoke_signing_key(request: Request) -> JSONResponse:
    state, idempotency_key, body = await read_keyed_request(request, RevokeRequest)
    assert idempotency_key is not None  # an operator's call always has one
    if body.compromised_since is not None and body.compromised_since > datetime.now(UTC):
        raise Problem(
            422,
            "compromised_since lies in the future",
            errors=[{"field": "compromised_since", "message": "must not lie in the future"}],
        )
    answer = await run_in_threadpool(
        _revoke_once, state, idempotency_key, request.path_params["key_id"], body
    )
    return keyed_response(answer, SigningKeyView.model_validate)
