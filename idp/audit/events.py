"""The audit catalogue: every security-relevant event, named ``noun.past_verb``.

A service records an event in the same transaction as the change it describes,
and only if the change succeeds. Events carry who did it (actor), whom it
concerns (subject), the agreement and client involved, a reason and the
request's IP and user agent; never a password, code, token or secret.
"""

EVENTS = {
    "identity.created": "An identity was created (sign-up, invitation, activation).",
    "identity.login_succeeded": "A person signed in with their password (and second factor when enrolled).",
    "identity.login_failed": "A sign-in failed: unknown e-mail or wrong password (the same to the person).",
    "identity.locked": "Too many failed attempts: signing in is paused for a while.",
    "identity.email_verified": "An e-mail address was confirmed by its link.",
    "identity.email_change_requested": "A person asked to change their e-mail; a link went to the new address.",
    "identity.email_changed": "A person changed their e-mail address.",
    "identity.password_changed": "A password was changed or reset; other sessions ended.",
    "identity.password_reset_requested": "A password reset link was asked for (sent only if the address exists).",
    "identity.sessions_ended": "A person signed out their other sessions.",
    "second_factor.enrolled": "A TOTP authenticator was set up (with new recovery codes).",
    "second_factor.disabled": "Two-step verification was turned off.",
    "second_factor.verified": "A TOTP or recovery code was accepted (login or step-up).",
    "second_factor.failed": "A wrong TOTP or recovery code was entered.",
    "second_factor.recovery_code_used": "A recovery code was spent.",
    "token.issued": "Tokens were issued to a client (grant type in the reason).",
    "token.revoked": "A token or token family was revoked.",
    "token.reuse_detected": "A used authorization code or rotated refresh token came back; its family was revoked.",
    "grant.given": "A person consented to a client.",
    "grant.revoked": "A person revoked a client's access.",
    "client.registered": "A client was registered (CLI, portal or dynamic registration).",
    "client.updated": "A client's metadata changed.",
    "client.secret_rotated": "A client's secret was rotated.",
    "client.disabled": "A client was disabled and its tokens revoked.",
    "client.deleted": "A client was deleted.",
    "membership.added": "A person became a member of an agreement.",
    "membership.role_changed": "A member's role changed.",
    "membership.removed": "A member was removed from an agreement.",
    "agreement.settings_changed": "An agreement's settings (e.g. required two-step verification) changed.",
    "invitation.sent": "An invitation was sent.",
    "invitation.revoked": "An invitation was revoked.",
    "invitation.accepted": "An invitation was accepted.",
    "legacy_user.activation_started": "Legacy credentials were proven; a verification link went to the new e-mail.",
    "legacy_user.activated": "A legacy username was moved onto a Connect login.",
    "legacy_user.login_failed": "A legacy sign-in failed.",
    "legacy_user.email_set": "A superuser set a legacy user's e-mail.",
    "legacy_user.imported": "Legacy users were imported by an operator.",
    "rate_limit.exceeded": "A caller was answered 429 Too Many Requests.",
}
