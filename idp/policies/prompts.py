"""Which interaction an authorization request still needs, as named checks.

Authlib validates the request itself and raises ``login_required`` for
``prompt=none`` without a session; these checks add what it leaves to us
(OIDC Core §3.1.2.1: ``prompt=login``, ``max_age``, ``id_token_hint``,
remembered consent). Each check has a reason (logged and shown in tests), the
interaction it needs, and the error to return instead under ``prompt=none``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable

from authlib.oauth2.rfc6749 import scope_to_list
from authlib.oauth2.rfc6749.errors import AccessDeniedError
from authlib.oidc.core.errors import ConsentRequiredError, InteractionRequiredError, LoginRequiredError

from ..sessions.service import ACR_MFA, ACR_PASSWORD, BrowserLogin


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
    #: An id_token_hint names someone other than the signed-in person.
    hint_mismatch: bool
    #: Why no agreement is selected yet (scope ``agreement``), or None.
    agreement_reason: str | None = None
    #: The request, the client or the agreement demands the second level.
    acr_required: bool = False


@dataclass(frozen=True)
class Check:
    reason: str
    interaction: str  # an endpoint of the interaction blueprint taking interaction_id
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
          lambda ctx: ctx.hint_mismatch and ctx.login is not None and not ctx.logged_in_here),
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
    Check("acr_required", "interaction_stepup", InteractionRequiredError,
          lambda ctx: ctx.acr_required and ctx.login is not None and ctx.login.acr != ACR_MFA,
          "A second authentication factor is required."),
    Check("consent_missing", "consent", ConsentRequiredError, _consent_missing),
]


def _essential_acr_values(raw_claims: str | None) -> set[str] | None:
    """Values of an essential ``acr`` in the OIDC ``claims`` parameter (§5.5.1.1)."""
    if not raw_claims:
        return None
    try:
        request = json.loads(raw_claims)
        acr = request.get("id_token", {}).get("acr")
    except (ValueError, AttributeError):
        return None
    if not isinstance(acr, dict) or not acr.get("essential"):
        return None
    if isinstance(acr.get("value"), str):
        return {acr["value"]}
    if isinstance(acr.get("values"), list):
        return {v for v in acr["values"] if isinstance(v, str)}
    return None


def second_factor_required(params, client, agreement, password_alone_allowed: bool = True) -> bool:
    """The four triggers of step-up: acr_values, an essential acr claim, the
    client's policy and the selected agreement's policy; and a password policy
    too short for a password to be the only factor."""
    if not password_alone_allowed:
        return True
    if getattr(client, "require_second_factor", False) or getattr(agreement, "require_second_factor", False):
        return True
    # acr_values is a preference list: the password level in it means the
    # password level is acceptable (OIDC Core §3.1.2.1).
    requested = set((params.get("acr_values") or "").split())
    if ACR_MFA in requested and ACR_PASSWORD not in requested:
        return True
    essential = _essential_acr_values(params.get("claims"))
    return bool(essential) and essential <= {ACR_MFA}


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
