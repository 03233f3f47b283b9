"""Which interaction an authorization request still needs, as named checks.

Authlib validates the request itself and raises ``login_required`` for
``prompt=none`` without a session; these checks add what it leaves to us
(OIDC Core §3.1.2.1: ``prompt=login``, ``max_age``, ``id_token_hint``,
remembered consent). Each check has a reason (logged and shown in tests), the
interaction it needs, and the error to return instead under ``prompt=none``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from authlib.oauth2.rfc6749 import scope_to_list
from authlib.oauth2.rfc6749.errors import AccessDeniedError
from authlib.oidc.core.errors import ConsentRequiredError, InteractionRequiredError, LoginRequiredError

from ..sessions.service import BrowserLogin


@dataclass(frozen=True)
class Context:
    params: dict
    client: object
    login: BrowserLogin | None
    #: Set by pages completed in this interaction, so a fresh login satisfies
    #: prompt=login and max_age instead of asking again.
    logged_in_here: bool
    consented_here: bool
    granted_scope: str | None
    requested_scope: str
    id_token_hint_sub: str | None
    #: Why no agreement is selected yet (scope ``agreement``), or None.
    agreement_reason: str | None = None


@dataclass(frozen=True)
class Check:
    reason: str
    interaction: str  # "login" | "agreement" | "no_agreement" | "consent"
    error: type
    applies: Callable[[Context], bool]
    description: str | None = None


def _prompts(ctx: Context) -> list[str]:
    return (ctx.params.get("prompt") or "").split()


def _max_age_exceeded(ctx: Context) -> bool:
    raw = ctx.params.get("max_age")
    if raw is None or ctx.logged_in_here or ctx.login is None:
        return False
    try:
        max_age = int(raw)
    except ValueError:
        return False
    return time.time() - ctx.login.auth_time > max_age


def _consent_missing(ctx: Context) -> bool:
    if ctx.consented_here:
        return False
    if "consent" in _prompts(ctx):
        return True
    if getattr(ctx.client, "first_party", False):
        return False
    if ctx.granted_scope is None:
        return True
    return not set(scope_to_list(ctx.requested_scope) or []) <= set(scope_to_list(ctx.granted_scope) or [])


CHECKS = [
    Check("no_session", "login", LoginRequiredError, lambda ctx: ctx.login is None),
    Check("prompt_login", "login", LoginRequiredError,
          lambda ctx: "login" in _prompts(ctx) and not ctx.logged_in_here),
    Check("max_age", "login", LoginRequiredError, _max_age_exceeded),
    # §3.1.2.2: if the hinted End-User is not the one signed in, prompt=none
    # MUST fail with login_required; otherwise ask them to sign in as that person.
    Check("id_token_hint_mismatch", "login", LoginRequiredError,
          lambda ctx: ctx.id_token_hint_sub is not None and ctx.login is not None
          and ctx.id_token_hint_sub != ctx.login.identity_id and not ctx.logged_in_here),
    # The agreement contract (DESIGN.md): choose one unless exactly one fits or
    # agreement_hint names one; prompt=none gets the standard error instead.
    Check("no_eligible_agreement", "no_agreement", AccessDeniedError,
          lambda ctx: ctx.agreement_reason == "no_eligible_agreement",
          "The person has no agreement that this application can be used with."),
    Check("agreement_hint_not_member", "agreement", AccessDeniedError,
          lambda ctx: ctx.agreement_reason == "agreement_hint_not_member",
          "The person has no membership in the agreement named by agreement_hint."),
    Check("agreement_not_selected", "agreement", InteractionRequiredError,
          lambda ctx: ctx.agreement_reason == "agreement_not_selected",
          "The person must choose an agreement."),
    Check("consent_missing", "consent", ConsentRequiredError, _consent_missing),
]


@dataclass(frozen=True)
class Decision:
    reason: str | None = None
    interaction: str | None = None
    error: type | None = None
    description: str | None = None


def evaluate(ctx: Context) -> Decision:
    """The first check that applies decides; none applying means issue the code."""
    for check in CHECKS:
        if check.applies(ctx):
            if "none" in _prompts(ctx):
                return Decision(reason=check.reason, error=check.error, description=check.description)
            return Decision(reason=check.reason, interaction=check.interaction, description=check.description)
    return Decision()
