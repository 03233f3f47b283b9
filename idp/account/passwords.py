"""Sign-up with e-mail verification, forgotten password, and password change.

Nothing here tells a stranger whether an e-mail address has an account: sign-up
with a taken address and "forgot password" for an unknown one show the same
page as the real thing, and their mails are sent in the background so the
answer takes the same time either way.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from flask import g, jsonify, render_template, request, session, url_for
from flask_babel import gettext as _

from ..errors import EmailTakenError, InvalidCredentialsError, InvalidEmailError
from ..extensions import db_session, origin, runtime
from ..identities import links
from ..identities import password_policy as policy
from ..identities import service as identities
from ..identities.models import Identity
from ..audit import service as audit
from ..mail import MailError
from ..policies import rate_limits
from ..sessions import service as sessions
from .views import bp, signed_in

log = logging.getLogger(__name__)
_background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mail")


def problem_messages(problems: list[policy.Problem]) -> list[str]:
    messages = {
        policy.TOO_SHORT: lambda p: _("Use at least %(min)s characters. A few unrelated words make a good password.",
                                      min=p.params.get("min", "")),
        policy.TOO_LONG: lambda p: _("Use at most %(max)s characters.", max=p.params.get("max", "")),
        policy.COMMON: lambda p: _("This password is too common. Choose something less predictable."),
        policy.CONTAINS_EMAIL: lambda p: _("Do not use your e-mail address in your password."),
        policy.CONTAINS_NAME: lambda p: _("Do not use your name in your password."),
        policy.WEAK: lambda p: _("This password is easy to guess. Add another word or two."),
    }
    return [messages[p.code](p) for p in problems if p.code in messages]


def _policy_problems(password: str, email: str, names: tuple[str, ...]) -> list[str]:
    return problem_messages(policy.check(password, email=email, names=names,
                                         min_length=runtime().settings.password_min_length))


def _send(to: str, subject: str, template: str, background: bool = False, **context) -> None:
    text = render_template(template, **context)
    mailer = runtime().mailer
    if not background:
        mailer.send(to, subject, text)
        return

    def deliver():
        try:
            mailer.send(to, subject, text)
        except MailError:
            log.exception("background mail to %s failed", to)

    _background.submit(deliver)


def _link(endpoint: str, token: str) -> str:
    return runtime().settings.issuer + url_for(endpoint, token=token)


@bp.post("/password/strength")
def strength():
    """For the live strength meter (CSRF-protected JSON)."""
    rate_limits.hit("password_strength", request.remote_addr or "-")
    data = request.get_json(silent=True) or {}
    password = str(data.get("password", ""))[:2048]
    email = str(data.get("email", ""))[:320]
    names = tuple(str(n)[:100] for n in data.get("names", []) if isinstance(n, str))[:4]
    result = policy.strength(password, email=email, names=names, min_length=runtime().settings.password_min_length)
    result["messages"] = problem_messages(policy.check(password, email=email, names=names,
                                                       min_length=runtime().settings.password_min_length))
    return jsonify(result)


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    form = {k: request.form.get(k, "").strip() for k in ("email", "given_name", "family_name")}
    errors, status = [], 200
    if request.method == "POST":
        password = request.form.get("password", "")
        if not identities.valid_email(form["email"]):
            errors.append(_("That does not look like an e-mail address."))
        errors += _policy_problems(password, form["email"], (form["given_name"], form["family_name"]))
        if not errors:
            try:
                identity = identities.create_identity(
                    db_session(), runtime().passwords, email=form["email"], password=password,
                    given_name=form["given_name"], family_name=form["family_name"])
            except EmailTakenError:
                existing = identities.find_by_email(db_session(), form["email"])
                _send(existing.email, _("Someone tried to sign up with your e-mail address"), "mail/signup_taken.txt",
                      background=True, reset_link=runtime().settings.issuer + url_for("account.forgot"))
            except InvalidEmailError:
                errors.append(_("That does not look like an e-mail address."))
            else:
                token = links.issue(runtime().store, links.VERIFY_EMAIL, identity.id)
                _send(identity.email, _("Confirm your e-mail address"), "mail/verify.txt", background=True,
                      link=_link("account.verify", token))
            if not errors:
                return render_template("account/check_mail.html", email=form["email"])
        status = 400
    return render_template("account/signup.html", form=form, errors=errors,
                           min_length=runtime().settings.password_min_length), status


@bp.get("/verify/<token>")
def verify(token):
    identity_id = links.redeem(runtime().store, links.VERIFY_EMAIL, token)
    identity = db_session().get(Identity, identity_id) if identity_id else None
    if identity is None:
        return render_template("errors/error.html", title=_("This link has expired or was already used"),
                               message=_("Sign in, or ask for a new link.")), 400
    identity.email_verified = True
    db_session().commit()
    return render_template("account/verified.html", identity=identity)


@bp.route("/password/forgot", methods=["GET", "POST"])
def forgot():
    if request.method == "POST":
        email = request.form.get("email", "").strip()
        rate_limits.hit("password_reset", request.remote_addr or "-")
        rate_limits.hit("password_reset_address", identities.normalize_email(email)[:320])
        identity = identities.find_by_email(db_session(), email) if identities.valid_email(email) else None
        audit.record(db_session(), "identity.password_reset_requested", subject=identity.id if identity else None,
                     origin=origin(), commit=True)
        if identity is not None and not identity.disabled:
            token = links.issue(runtime().store, links.RESET_PASSWORD, identity.id)
            _send(identity.email, _("Reset your password"), "mail/reset.txt", background=True,
                  link=_link("account.reset", token))
        # The same answer whether or not the address has an account.
        return render_template("account/check_mail.html", email=email)
    return render_template("account/forgot.html")


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
def reset(token):
    # GET only looks: mail scanners that open links must not spend them.
    identity_id = links.peek(runtime().store, links.RESET_PASSWORD, token)
    identity = db_session().get(Identity, identity_id) if identity_id else None
    if identity is None:
        return render_template("errors/error.html", title=_("This link has expired or was already used"),
                               message=_("Ask for a new link to reset your password.")), 400
    errors = []
    if request.method == "POST":
        password = request.form.get("password", "")
        errors = _policy_problems(password, identity.email, (identity.given_name, identity.family_name))
        if not errors:
            if links.redeem(runtime().store, links.RESET_PASSWORD, token) != identity.id:
                return render_template("errors/error.html", title=_("This link has expired or was already used"),
                                       message=_("Ask for a new link to reset your password.")), 400
            identities.set_password(db_session(), runtime().passwords, identity, password, reason="reset",
                                    origin=origin())
            # Following the link proved the person reads this inbox.
            identity.email_verified = True
            db_session().commit()
            sessions.sign_out(session)
            return render_template("account/password_changed.html", signed_in=False)
    return render_template("account/reset.html", identity=identity, errors=errors,
                           min_length=runtime().settings.password_min_length), 400 if errors else 200


@bp.route("/password", methods=["GET", "POST"])
@signed_in
def change_password():
    identity, errors = g.identity, []
    if request.method == "POST":
        try:
            identities.authenticate(db_session(), runtime().passwords, identity.email,
                                    request.form.get("current_password", ""))
        except InvalidCredentialsError:
            errors.append(_("Your current password is not correct."))
        else:
            password = request.form.get("password", "")
            errors = _policy_problems(password, identity.email, (identity.given_name, identity.family_name))
            if not errors:
                identities.set_password(db_session(), runtime().passwords, identity, password, origin=origin())
                # This browser stays signed in (with a fresh session id); every other one is signed out.
                sessions.sign_in(session, identity.id, list(g.login.amr), runtime().settings.session_lifetime)
                _send(identity.email, _("Your password was changed"), "mail/password_changed.txt", background=True)
                return render_template("account/password_changed.html", signed_in=True)
    return render_template("account/change_password.html", identity=identity, errors=errors,
                           min_length=runtime().settings.password_min_length), 400 if errors else 200
