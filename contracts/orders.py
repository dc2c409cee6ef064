"""An order's lifecycle: its statuses and the moves between them, in one place.

Every status change goes through ``platform_db``'s ``OrderRepository.move``, which applies
:data:`TRANSITIONS` in the same UPDATE that changes the row, so concurrent writers (API, sensors,
run steps) can never make a move this table does not allow.

::

    received -> edp_pending -> building -> waiting_for_apk -> building ... -> delivered
                                                                          \\-> email_unknown -> delivered
    any of received, edp_pending, building, waiting_for_apk -> failed
    failed -> (a retry) received | edp_pending | building | waiting_for_apk | delivered | email_unknown

A delivered order is never downgraded: a re-delivery that fails leaves it ``delivered`` and records
the failed attempt beside it (``attempt_error``), and a re-delivery that waits for an APK leaves it
delivered too.
"""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    RECEIVED = "received"
    EDP_PENDING = "edp_pending"
    BUILDING = "building"
    WAITING_FOR_APK = "waiting_for_apk"
    DELIVERED = "delivered"
    # The portal version is published, but whether SES sent its email is not known (the answer was
    # lost after the request left). Only an operator resolves it (resend or mark sent).
    EMAIL_UNKNOWN = "email_unknown"
    FAILED = "failed"


S = OrderStatus

# Where an order may go from each status. Staying put is listed where a step repeats (a retried
# step, a new EDP job, a re-delivery).
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.RECEIVED: frozenset({S.RECEIVED, S.EDP_PENDING, S.FAILED}),
    S.EDP_PENDING: frozenset({S.EDP_PENDING, S.BUILDING, S.FAILED}),
    S.BUILDING: frozenset({S.BUILDING, S.WAITING_FOR_APK, S.DELIVERED, S.EMAIL_UNKNOWN, S.FAILED}),
    S.WAITING_FOR_APK: frozenset({S.WAITING_FOR_APK, S.BUILDING, S.DELIVERED, S.EMAIL_UNKNOWN, S.FAILED}),
    S.DELIVERED: frozenset({S.DELIVERED, S.EMAIL_UNKNOWN}),
    S.EMAIL_UNKNOWN: frozenset({S.EMAIL_UNKNOWN, S.DELIVERED}),
    S.FAILED: frozenset(
        {S.FAILED, S.RECEIVED, S.EDP_PENDING, S.BUILDING, S.WAITING_FOR_APK, S.DELIVERED, S.EMAIL_UNKNOWN}
    ),
}

# Statuses in which the pipeline still owes the order something; the sweeper watches these.
IN_FLIGHT = frozenset({S.RECEIVED, S.EDP_PENDING, S.BUILDING})
# At least one portal version reached the customer (or may have): failures no longer downgrade it.
DELIVERED_ONCE = frozenset({S.DELIVERED, S.EMAIL_UNKNOWN})


def can_move(current: OrderStatus, to: OrderStatus) -> bool:
    return to in TRANSITIONS[current]


def allowed_from(to: OrderStatus) -> frozenset[OrderStatus]:
    """Every status an order may be in to move to ``to``."""
    return frozenset(current for current, targets in TRANSITIONS.items() if to in targets)


class EmailState(StrEnum):
    """Where a portal version's delivery email stands (``delivery_emails.state``)."""

    # Claimed; the request to SES is under way (or the sender died: see DeliveryEmail.stale).
    SENDING = "sending"
    SENT = "sent"
    # The request may have reached SES, but its answer was lost: only an operator resolves it.
    UNKNOWN = "unknown"
    # An operator confirmed the customer got it (SES's logs, the customer).
    MARKED_SENT = "marked_sent"
    # An operator released it for one resend; the email step's next claim takes it over.
    RESEND_REQUESTED = "resend_requested"
