"""``POST /orders/{cfg_id}/email``: an operator resolves a delivery email whose outcome is unknown.

An email is ``unknown`` when its request may have reached SES but the answer was lost (a read
timeout, a dropped connection, a 5xx), or when its sender died mid-send. The pipeline never sends
it again by itself; the operator checks SES and the customer, then posts one of:

- ``{"version": N, "action": "mark_sent"}``: the customer got it. The email becomes ``marked_sent``
  and the order moves from ``email_unknown`` to ``delivered`` once no other version's email of the
  order is unknown. 200.
- ``{"version": N, "action": "resend"}``: it did not arrive. Only for the order's newest portal
  version (the email step mails the newest manifest): the email is released for one more attempt
  (``resend_requested``) and a Dagster backfill of ``order/email`` is launched over the order; its
  step claims the email and sends it once. 202 with the backfill id.

409 when the version's email is not unknown (sent, marked sent, being sent, never claimed) or the
order has no such portal version; 404 for an unknown order; 503 when Dagster did not launch the
backfill (the email is unknown again and the Idempotency-Key free for the retry).

A repeated request with the same Idempotency-Key and the same order, version and action changes
nothing and answers what the first did: the same ``backfill_id`` (resend) with the email's state
as it is now; a repeated ``mark_sent`` also finishes the order's move to delivered if the first
request stopped before it. The key with another order, version or action is a 409.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.orders import RETRY_AFTER_SECONDS, EmailView, _order_or_404, launch_or_undo, read_keyed_request
from api.state import ApiState
from contracts.orders import EmailState, OrderStatus
from contracts.records import DeliveryEmail, EmailAction
from platform_db.deliveries import EmailResolution, ResolutionKeyTaken
from service_kit.problems import Problem

EMAIL_ASSET = ["order", "email"]
BACKFILL_TAGS = {"platform/email-resend": "api"}


class EmailResolutionRequest(BaseModel):
    """What the operator found out about one portal version's email."""

    model_config = ConfigDict(extra="forbid")

    version: StrictInt = Field(ge=1, description="The portal version whose email is unknown.")
    action: EmailAction = Field(
        description="mark_sent: the customer got it; resend: send it once more (newest version only)."
    )


class EmailResolutionAnswer(BaseModel):
    cfg_id: str
    version: int
    action: EmailAction
    # The email as it stands now (resend_requested until the backfill's step claims it; null when
    # a resend's attempt was refused by SES and released its claim).
    email: EmailView | None
    order_status: OrderStatus
    # resend: the Dagster backfill of order/email that sends it again; null for mark_sent.
    backfill_id: str | None = None


def _answer(state: ApiState, resolution: EmailResolution) -> EmailResolutionAnswer:
    email = state.deliveries.email_of(resolution.cfg_id, resolution.version)
    order = _order_or_404(state, resolution.cfg_id)
    return EmailResolutionAnswer(
        cfg_id=resolution.cfg_id,
        version=resolution.version,
        action=resolution.action,
        email=EmailView.of(email) if email is not None else None,
        order_status=order.status,
        backfill_id=resolution.backfill_id,
    )


# Emails that keep an order in email_unknown: not known to have reached the customer, nor on their way.
_OPEN = frozenset({EmailState.UNKNOWN, EmailState.RESEND_REQUESTED})


def _settle_order(state: ApiState, cfg_id: str) -> None:
    """email_unknown -> delivered once no email of the order is unknown (or waiting for its resend)."""
    order = _order_or_404(state, cfg_id)
    if order.status is not OrderStatus.EMAIL_UNKNOWN:
        return
    if any(email.outcome in _OPEN for email in state.deliveries.emails(cfg_id).values()):
        return
    # A re-delivery could move the order in between (to building, say): move() applies the lifecycle.
    state.orders.move(cfg_id, OrderStatus.DELIVERED)


def _not_resolvable(email: DeliveryEmail | None, version: int, pending: EmailResolution | None) -> Problem:
    if email is None:
        return Problem(
            409,
            f"the email of portal version {version} was never claimed (no attempt to send it is recorded), so its "
            "outcome is not unknown; the pipeline sends it (or POST /orders/{cfg_id}/redeliver delivers a new version)",
        )
    state = email.outcome
    if state is EmailState.UNKNOWN:
        return Problem(
            409, "the email changed while this request was answered; retry", headers={"Retry-After": "1"}
        )
    if state is EmailState.SENT:
        return Problem(
            409,
            f"the email of portal version {version} was sent (SES message id {email.message_id}); nothing to resolve",
        )
    if state is EmailState.MARKED_SENT:
        return Problem(
            409,
            f"the email of portal version {version} was already marked sent by an operator; nothing to resolve",
        )
    if state is EmailState.SENDING:
        return Problem(
            409,
            f"the email of portal version {version} is being sent right now; look at GET /orders/{{cfg_id}} in a minute",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    # resend_requested, and a resend asked for again too soon.
    launched = f" (backfill {pending.backfill_id})" if pending is not None and pending.backfill_id else ""
    return Problem(
        409,
        f"a resend of the email of portal version {version} was requested{launched} and has not been sent yet; "
        "mark_sent cancels it, a new resend may be requested a few minutes after the last one",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


def _replay(
    state: ApiState, earlier: EmailResolution, cfg_id: str, version: int, action: EmailAction
) -> EmailResolution | None:
    """The answer to a repeated Idempotency-Key, or None when its resend launch died (start again)."""
    if (earlier.cfg_id, earlier.version, earlier.action) != (cfg_id, version, action):
        raise Problem(
            409,
            "this Idempotency-Key was already used for another email resolution (order, version or action)",
        )
    if earlier.action is EmailAction.MARK_SENT:
        _settle_order(state, cfg_id)
        return earlier
    if earlier.backfill_id is not None:
        return earlier
    if state.deliveries.forget_stale_resolution(earlier.id):
        return None
    raise Problem(
        409,
        "a resend with this Idempotency-Key is being launched right now; retry in a few seconds",
        headers={"Retry-After": "5"},
    )


def _resolve(
    state: ApiState, cfg_id: str, version: int, action: EmailAction, key: str | None
) -> tuple[EmailResolutionAnswer, int]:
    _order_or_404(state, cfg_id)
    status = 202 if action is EmailAction.RESEND else 200
    if key is not None:
        earlier = state.deliveries.resolution_by_key(key)
        if earlier is not None:
            replayed = _replay(state, earlier, cfg_id, version, action)
            if replayed is not None:
                return _answer(state, replayed), status
    published = [v.version for v in state.deliveries.portal_versions(cfg_id)]
    if version not in published:
        listed = ", ".join(str(v) for v in published) or "none yet"
        raise Problem(409, f"this order has no portal version {version} (published: {listed})")
    if action is EmailAction.RESEND and version != max(published):
        raise Problem(
            409,
            f"only the newest portal version ({max(published)}) can be resent: the email step mails the newest "
            f"manifest. Mark version {version} sent, or re-deliver the order (POST /orders/{{cfg_id}}/redeliver)",
        )
    try:
        if action is EmailAction.MARK_SENT:
            resolution = state.deliveries.mark_sent_by_operator(cfg_id, version, key)
        else:
            resolution = state.deliveries.release_for_resend(cfg_id, version, key)
    except ResolutionKeyTaken:
        # A concurrent request with the same key was first: answer what it did.
        assert key is not None
        earlier = state.deliveries.resolution_by_key(key)
        if earlier is None:
            raise Problem(
                409, "a request with this Idempotency-Key is in progress; retry", headers={"Retry-After": "5"}
            ) from None
        replayed = _replay(state, earlier, cfg_id, version, action)
        if replayed is None:
            raise Problem(
                409, "a request with this Idempotency-Key is in progress; retry", headers={"Retry-After": "5"}
            ) from None
        return _answer(state, replayed), status
    if resolution is None:
        pending = next(
            (
                r
                for r in reversed(state.deliveries.resolutions(cfg_id, version))
                if r.action is EmailAction.RESEND
            ),
            None,
        )
        raise _not_resolvable(state.deliveries.email_of(cfg_id, version), version, pending)
    if action is EmailAction.MARK_SENT:
        _settle_order(state, cfg_id)
        return _answer(state, resolution), status
    return _answer(state, _launch_resend(state, resolution)), status


def _launch_resend(state: ApiState, resolution: EmailResolution) -> EmailResolution:
    # Undone, the email is unknown again.
    launched = launch_or_undo(
        lambda: state.backfills.launch(
            [resolution.cfg_id],
            [EMAIL_ASSET],
            tags=BACKFILL_TAGS,
            description=(
                f"resend of the email of portal version {resolution.version} of order {resolution.cfg_id} "
                "(its outcome was unknown) through the API"
            ),
        ),
        lambda: state.deliveries.undo_resend(resolution.id),
        "resend",
    )
    return state.deliveries.record_resend_backfill(resolution.id, launched.backfill_id)


async def resolve_email(request: Request) -> JSONResponse:
    state, key, body = await read_keyed_request(request, EmailResolutionRequest)
    answer, status = await run_in_threadpool(
        _resolve, state, request.path_params["cfg_id"], body.version, body.action, key
    )
    return JSONResponse(answer.model_dump(mode="json"), status_code=status)
