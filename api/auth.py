"""Who may call what: the website's credential and the operators' credential, each with its scope.

The website (its backend) submits orders and reads their status; it never needs what makes an
order's portal its customer's (the link, the download record, the emails), nor any operator action.
So a leak from the website's backend gives submits and statuses, not every customer's delivery.
Each credential is a list of values (``WEBSITE_API_TOKENS``, ``OPERATOR_API_TOKENS``): a new value
is added before the old one is removed, so rotating one needs no downtime.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import StrEnum

from starlette.requests import Request

from platform_config.settings import Settings, api_credentials
from service_kit.problems import Problem


class Scope(StrEnum):
    # POST /submit and an order's status (GET /orders/{cfg_id} without its portal and emails).
    WEBSITE = "website"
    # Everything: the whole order view and every operator action.
    OPERATOR = "operator"


CREDENTIAL_OF = {Scope.WEBSITE: "WEBSITE_API_TOKENS", Scope.OPERATOR: "OPERATOR_API_TOKENS"}
_WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="platform-api"'}


@dataclass(frozen=True)
class ApiCredentials:
    """The valid token values of each scope; ``None`` in place of this: a stage without credentials."""

    website: tuple[bytes, ...]
    operator: tuple[bytes, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiCredentials | None:
        if not settings.api.require_token:
            return None
        website, operator = api_credentials(settings.secrets)
        return cls(
            website=tuple(value.encode() for value in website),
            operator=tuple(value.encode() for value in operator),
        )

    def scope_of(self, presented: bytes) -> Scope | None:
        # Every value is compared, in constant time each, so the answer's timing tells neither
        # which value nor how much of a guess was right.
        operator = [hmac.compare_digest(presented, value) for value in self.operator]
        website = [hmac.compare_digest(presented, value) for value in self.website]
        if any(operator):
            return Scope.OPERATOR
        if any(website):
            return Scope.WEBSITE
        return None


def caller_scope(request: Request, credentials: ApiCredentials | None) -> Scope:
    """The scope of the request's bearer token; 401 without a valid one. Where the stage needs no
    credential (local, demo on loopback), every caller is an operator."""
    if credentials is None:
        return Scope.OPERATOR
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    scope = credentials.scope_of(presented.strip().encode()) if scheme.lower() == "bearer" else None
    if scope is None:
        raise Problem(
            401,
            "a valid bearer token is required: the website's (WEBSITE_API_TOKENS) or an operator's "
            "(OPERATOR_API_TOKENS)",
            headers=_WWW_AUTHENTICATE,
        )
    return scope


def require_scope(request: Request, credentials: ApiCredentials | None, needed: Scope) -> Scope:
    """The caller's scope if it covers ``needed``; 401 without a valid token, 403 naming the scope
    that is missing."""
    scope = caller_scope(request, credentials)
    if needed is Scope.OPERATOR and scope is not Scope.OPERATOR:
        raise Problem(
            403,
            f"this route needs the operator scope (a value of {CREDENTIAL_OF[Scope.OPERATOR]}); "
            f"the token presented has the {scope.value} scope",
            # RFC 6750's answer to a valid token without the scope, so a client can tell it from a
            # wrong token.
            headers={
                "WWW-Authenticate": f'Bearer realm="platform-api", error="insufficient_scope", '
                f'scope="{needed.value}"'
            },
        )
    return scope
