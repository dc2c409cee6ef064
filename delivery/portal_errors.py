"""The portal's error pages: what a customer's browser shows for a link that leads nowhere.

A customer clicks the link of an old email; a JSON problem means nothing to them. The page says
what happened in plain words and what to do: use the newest email's link, or ask the support
contact (setting ``portal.support_contact``). API clients keep the JSON problem (``api.portal``).

Every miss (unknown or rotated token, unknown version or file) renders the one same page, so the
page, like the 404 it comes with, never tells which part of a guessed link was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from delivery.portal import template_environment

TEMPLATE = "portal_error.html.j2"


@dataclass(frozen=True)
class WithdrawnVersion:
    """A download under a yanked version: which one, why, and where the customer goes instead."""

    version: int
    reason: str
    # The newest version not yanked; None when every version is yanked.
    current_version: int | None
    # The order's portal link under the token the request came with (it was valid).
    portal_url: str


def render_link_not_valid(*, support_contact: str) -> str:
    """The page of every 404 under ``/portal``."""
    return (
        template_environment().get_template(TEMPLATE).render(withdrawn=None, support_contact=support_contact)
    )


def render_version_withdrawn(withdrawn: WithdrawnVersion, *, support_contact: str) -> str:
    """The page of a 410: the version was withdrawn on purpose, with the reason and the newest version."""
    return (
        template_environment()
        .get_template(TEMPLATE)
        .render(withdrawn=withdrawn, support_contact=support_contact)
    )
