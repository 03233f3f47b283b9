"""Headers, CSRF and redirects (issue 10, Security).

- Every HTML page (sign-in, consent, agreement chooser, second step, account,
  developer portal, agreement admin, logout, form_post, error pages) carries a
  Content-Security-Policy without 'unsafe-inline' and with frame-ancestors
  'none', X-Frame-Options DENY, nosniff and a Referrer-Policy; HSTS is sent on
  every response of the https test issuer. No page holds inline script, style or
  event handlers that such a policy would block.
- Every state-changing form carries a CSRF token, and every state-changing
  route outside the protocol endpoints refuses a POST without one.
- No open redirect: the language switch's ?next=, /login?next=,
  /stepup?return_to=, logout's post_logout_redirect_uri and authorize's
  redirect_uri, each fed a catalogue of hostile values, never answer with a
  Location a browser would resolve to another origin (a registered redirect URI
  excepted).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlencode, urlsplit

import pytest

from tests.conftest import ISSUER
from tests.helpers.factories import PASSWORD
from tests.helpers.oidc import csrf_token, make_rp, path_of
from tests.protocol.test_agreements_authorize import add_agreement, agreement_rp, is_page, start
from tests.protocol.test_rp_initiated_logout import PLRU, logout_rp, signed_in
from tests.protocol.test_two_step import enrol_directly
from tests.security.conftest import new_ip

CSRF_REFUSED = "This form has expired"


# -- collecting pages --------------------------------------------------------------------------------------


def _login(browser, identity, next_path: str | None = None):
    path = "/login" + ("?" + urlencode({"next": next_path}) if next_path else "")
    page = browser.get(path)
    return browser.post(path, data={"csrf_token": csrf_token(page.get_data(as_text=True)), "email": identity.email,
                                    "password": PASSWORD, "action": "login"})


def collect_pages(app, factory, db, runtime) -> dict[str, object]:
    """name -> response, for every kind of HTML page the IdP serves."""
    pages: dict[str, object] = {}
    anon = app.test_client()
    for path in ("/", "/login", "/account/signup", "/account/password/forgot", "/device", "/agreements/activate",
                 "/account/password/reset/not-a-token", "/account/verify/not-a-token", "/interaction/nope/login",
                 "/login/second-step", "/no-such-page", "/authorize", "/authorize?client_id=nobody&response_type=code"):
        pages[f"GET {path}"] = anon.get(path)
    pages["POST /login without CSRF"] = anon.post("/login", data={"email": "a@example.com", "password": "x"})

    # An authorization request through login and consent.
    browser = app.test_client()
    rp = make_rp(browser, factory)
    identity = factory.identity()
    response = rp.follow(rp.authorize())
    assert is_page(response, "login"), response.location
    pages["interaction login"] = browser.get(path_of(response.location))
    response = rp.follow(rp.login(response, identity.email))
    assert is_page(response, "consent"), response.location
    pages["consent"] = browser.get(path_of(response.location))
    response = rp.follow(rp.consent(response))
    assert response.location.startswith(rp.redirect_uri)
    pages["form_post"] = rp.authorize(response_mode="form_post")

    for path in ("/account/", "/account/settings", "/account/password", "/account/two-step/enrol",
                 "/account/settings/email", "/account/agreements", "/developer/", "/developer/apps/new",
                 "/agreements/", "/device", "/stepup?return_to=/account/", "/logout"):
        pages[f"GET {path} (signed in)"] = browser.get(path)
    confirm = pages["GET /logout (signed in)"]
    pages["logged out"] = browser.post("/logout", data={"csrf_token": csrf_token(confirm.get_data(as_text=True))})

    # The agreement chooser and the superuser's page.
    chooser_browser = app.test_client()
    product = factory.product()
    member = factory.identity()
    first = add_agreement(db, product, (member, "superuser"))
    add_agreement(db, product, member)
    response = start(agreement_rp(chooser_browser, factory, product=product), member)
    assert is_page(response, "agreement"), response.location
    pages["agreement chooser"] = chooser_browser.get(path_of(response.location))
    pages["agreement admin"] = chooser_browser.get(f"/agreements/{first.number}/")

    # The second step of a sign-in.
    two_step = app.test_client()
    enrolled = factory.identity()
    enrol_directly(runtime, db, enrolled)
    assert path_of(_login(two_step, enrolled).location) == "/login/second-step"
    pages["second step"] = two_step.get("/login/second-step")
    return pages


def csp_directives(value: str) -> dict[str, list[str]]:
    directives = {}
    for part in value.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = [w.lower() for w in words[1:]]
    return directives


def header_problems(response) -> list[str]:
    problems = []
    headers = response.headers
    csp = headers.get("Content-Security-Policy")
    if not csp:
        problems.append("no Content-Security-Policy")
    else:
        directives = csp_directives(csp)
        if "'unsafe-inline'" in csp.lower() or "'unsafe-eval'" in csp.lower():
            problems.append(f"CSP allows unsafe-inline/eval: {csp}")
        if directives.get("frame-ancestors") != ["'none'"]:
            problems.append(f"CSP frame-ancestors is not 'none': {csp}")
        if "default-src" not in directives and "script-src" not in directives:
            problems.append(f"CSP restricts no scripts: {csp}")
        for name in ("default-src", "script-src"):
            if "*" in directives.get(name, []):
                problems.append(f"CSP {name} allows *: {csp}")
    if headers.get("X-Frame-Options", "").upper() != "DENY":
        problems.append(f"X-Frame-Options is {headers.get('X-Frame-Options')!r}")
    if headers.get("X-Content-Type-Options", "").lower() != "nosniff":
        problems.append("no X-Content-Type-Options: nosniff")
    if headers.get("Referrer-Policy", "").lower() not in ("no-referrer", "same-origin", "strict-origin",
                                                          "strict-origin-when-cross-origin"):
        problems.append(f"Referrer-Policy is {headers.get('Referrer-Policy')!r}")
    hsts = headers.get("Strict-Transport-Security", "")
    match = re.search(r"max-age=(\d+)", hsts)
    if not match or int(match.group(1)) < 180 * 86400:
        problems.append(f"HSTS missing or short on the https issuer: {hsts!r}")
    return problems


class _Markup(HTMLParser):
    """Forms (method, action, input names) and anything a strict CSP would block."""

    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []
        self.blocked: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "form":
            self.forms.append({"method": (attributes.get("method") or "get").lower(),
                               "action": attributes.get("action") or "", "inputs": set()})
        elif tag in ("input", "button", "select", "textarea") and self.forms and attributes.get("name"):
            self.forms[-1]["inputs"].add(attributes["name"])
        if tag == "script" and not attributes.get("src"):
            self.blocked.append("inline <script>")
        if tag == "style":
            self.blocked.append("inline <style>")
        for name, value in attrs:
            if name.startswith("on"):
                self.blocked.append(f"event handler {name}= on <{tag}>")
            if name == "style":
                self.blocked.append(f"style= on <{tag}>")
            if name in ("href", "src", "action") and value and value.strip().lower().startswith("javascript:"):
                self.blocked.append(f"javascript: URL in {name}")


def parse(response) -> _Markup:
    markup = _Markup()
    markup.feed(response.get_data(as_text=True))
    return markup


@pytest.fixture
def pages(app, factory, db, runtime):
    return collect_pages(app, factory, db, runtime)


def test_every_html_page_carries_the_security_headers(pages):
    problems = {}
    for name, response in pages.items():
        assert response.mimetype == "text/html", (name, response.status_code, response.mimetype)
        found = header_problems(response)
        if found:
            problems[f"{name} ({response.status_code})"] = found
    assert not problems, problems


def test_no_page_needs_inline_script_or_style(pages):
    """With script-src/style-src falling back to 'self', inline code would be blocked (and must not be needed)."""
    problems = {name: parse(r).blocked for name, r in pages.items() if parse(r).blocked}
    assert not problems, problems


def test_json_and_static_responses_carry_nosniff_and_hsts(client):
    for response in (client.get("/.well-known/openid-configuration"), client.get("/jwks"),
                     client.post("/token", data={}), client.get("/healthz"), client.get("/static/idp.css"),
                     client.get("/api/v1/me/agreements"), client.get("/metrics")):
        assert response.headers.get("X-Content-Type-Options") == "nosniff", response.request.path
        assert response.headers.get("Strict-Transport-Security", "").startswith("max-age="), response.request.path


def test_no_hsts_on_a_plain_http_loopback_issuer(settings):
    from idp.app import create_app

    app = create_app(settings.with_(issuer="http://127.0.0.1:5000"))
    try:
        response = app.test_client().get("/login")
        assert "Strict-Transport-Security" not in response.headers
        assert response.headers["X-Frame-Options"] == "DENY"
    finally:
        app.extensions["idp"].db.dispose()


# -- CSRF ---------------------------------------------------------------------------------------------------


def test_every_state_changing_form_has_a_csrf_token(pages):
    missing = []
    for name, response in pages.items():
        for form in parse(response).forms:
            if form["method"] != "post":
                continue
            action = form["action"]
            if urlsplit(action).netloc and not action.startswith(ISSUER):
                # form_post hands the response to the RP: our CSRF token must not travel there.
                assert "csrf_token" not in form["inputs"], (name, action)
                continue
            if "csrf_token" not in form["inputs"]:
                missing.append((name, action or "(this page)", sorted(form["inputs"])))
    assert not missing, missing
    assert sum(1 for r in pages.values() for f in parse(r).forms if f["method"] == "post") >= 15


#: Routes that authenticate clients or tokens instead of cookies, and logout (which checks the token itself).
CSRF_EXEMPT_BLUEPRINTS = {"oidc", "api"}
CSRF_SELF_CHECKED = {"interaction.logout"}


def _sample_path(rule) -> str:
    path = rule.rule
    for converter in re.findall(r"<[^>]+>", path):
        path = path.replace(converter, "1" if converter.startswith("<int:") else "sample")
    return path


def test_every_post_route_refuses_a_request_without_csrf_token(app, factory):
    identity = factory.identity()
    browser = app.test_client()
    assert _login(browser, identity).status_code == 302
    token = csrf_token(browser.get("/account/password").get_data(as_text=True))
    checked, accepted = [], []
    for rule in app.url_map.iter_rules():
        if "POST" not in rule.methods or rule.endpoint.split(".")[0] in CSRF_EXEMPT_BLUEPRINTS:
            continue
        if rule.endpoint in CSRF_SELF_CHECKED or rule.endpoint == "static":
            continue
        path = _sample_path(rule)
        for label, data, headers in (("none", {}, {}), ("forged", {"csrf_token": "forged." + token[7:]}, {}),
                                     ("other session's", {"csrf_token": _foreign_token(app)}, {})):
            response = browser.post(path, data=data, headers=headers)
            if response.status_code != 400 or CSRF_REFUSED not in response.get_data(as_text=True):
                accepted.append((rule.endpoint, path, label, response.status_code))
        checked.append(rule.endpoint)
    assert not accepted, accepted
    assert {"interaction.standalone_login", "interaction.consent", "account.change_password", "portal.create",
            "agreement_admin.invite", "account.strength"} <= set(checked)
    assert browser.get("/account/").status_code == 200, "the refused requests must not have signed the person out"


def _foreign_token(app) -> str:
    return csrf_token(app.test_client().get("/login").get_data(as_text=True))


def test_logout_confirmation_without_csrf_token_does_not_sign_out(app, factory):
    identity = factory.identity()
    browser = app.test_client()
    assert _login(browser, identity).status_code == 302
    response = browser.post("/logout", data={})
    assert response.status_code == 400 and CSRF_REFUSED in response.get_data(as_text=True)
    assert browser.get("/account/").status_code == 200


# -- open redirects ---------------------------------------------------------------------------------------

EVIL = "evil.example"
HOSTILE = [
    f"//{EVIL}", f"//{EVIL}/cb", f"///{EVIL}", f"////{EVIL}", f" //{EVIL}", f"\t//{EVIL}",
    f"https://{EVIL}", f"http://{EVIL}/", f"HTTPS://{EVIL.upper()}", f"https:{EVIL}", f"https:/{EVIL}",
    f"https:\\\\{EVIL}", f"/\\{EVIL}", f"\\\\{EVIL}", f"\\/{EVIL}", f"/\\/{EVIL}", f"/\t/{EVIL}", f"/\n/{EVIL}",
    f"%2F%2F{EVIL}", f"/%2F%2F{EVIL}", f"%5C%5C{EVIL}", f"/%5C{EVIL}",
    "javascript:alert(1)", "JavaScript:alert(document.domain)", "java\tscript:alert(1)", " javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>", "vbscript:msgbox(1)",
    f"https://idp.test.{EVIL}", f"https://idp.test@{EVIL}", f"https://{EVIL}#@idp.test", f"https://{EVIL}\\@idp.test",
    f"/\r\nLocation: https://{EVIL}", f"/login?next=//{EVIL}",
]


def _browser_resolve(location: str) -> tuple[str, str]:
    """(scheme, host) a browser would go to for this Location, per the WHATWG URL rules that matter here."""
    stripped = location.strip("".join(chr(c) for c in range(0x21)))
    stripped = re.sub(r"[\t\n\r]", "", stripped)
    scheme_match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", stripped)
    scheme = scheme_match.group(1).lower() if scheme_match else ""
    if scheme in ("", "http", "https"):
        stripped = stripped.replace("\\", "/")
    if scheme and scheme not in ("http", "https"):
        return scheme, ""
    rest = stripped[len(scheme) + 1:] if scheme else stripped
    if scheme and not rest.startswith("/") and scheme == "https":
        return "https", "idp.test"  # "https:path" relative to an https base: same origin
    if scheme or rest.startswith("//"):
        # Special schemes ignore any number of slashes before the authority.
        authority = rest.lstrip("/").split("/")[0].split("?")[0].split("#")[0]
        host = authority.rsplit("@", 1)[-1].split(":")[0].lower()
        return scheme or "https", host
    return "https", "idp.test"


def off_site(response, allowed: tuple[str, ...] = ()) -> str | None:
    """The Location if a browser would leave the IdP for somewhere not in ``allowed``; else None."""
    location = response.headers.get("Location")
    if location is None or any(_same_endpoint(location, target) for target in allowed):
        return None
    if _browser_resolve(location) != ("https", "idp.test"):
        return location
    return None


def chase(browser, response, allowed: tuple[str, ...] = (), hops: int = 5) -> str | None:
    """Follow the IdP's own redirects (GET, a few hops); the first off-site Location met, or None."""
    for _ in range(hops):
        found = off_site(response, allowed)
        if found or response.status_code not in (301, 302, 303, 307, 308):
            return found
        location = response.headers["Location"]
        if any(_same_endpoint(location, target) for target in allowed):
            return None
        parts = urlsplit(location.strip().replace("\\", "/"))
        response = browser.get(parts.path + (f"?{parts.query}" if parts.query else ""))
    return off_site(response, allowed)


def _same_endpoint(location: str, registered: str) -> bool:
    if "\\" in location or re.search(r"[\x00-\x20]", location):
        return False
    a, b = urlsplit(location), urlsplit(registered)
    return (a.scheme.lower(), a.netloc.lower(), a.path) == (b.scheme.lower(), b.netloc.lower(), b.path)


def _assert_no_open_redirect(results):
    bad = [(value, location) for value, location in results if location]
    assert not bad, "open redirect: " + "; ".join(f"{v!r} -> {loc!r}" for v, loc in bad)


def test_language_switch_next(client):
    results = []
    for value in HOSTILE:
        response = client.get("/language/da?" + urlencode({"next": value}))
        assert response.status_code == 302
        results.append((value, chase(client, response)))
    _assert_no_open_redirect(results)
    kept = client.get("/language/en?" + urlencode({"next": "/account/?tab=1"}))
    assert path_of(kept.location) == "/account/?tab=1"


def test_login_next(app, factory):
    identity = factory.identity()
    results = []
    for value in HOSTILE:
        browser = app.test_client()
        browser.environ_base["REMOTE_ADDR"] = new_ip()
        response = _login(browser, identity, next_path=value)
        assert response.status_code == 302, (value, response.status_code)
        results.append((value, chase(browser, response)))
    _assert_no_open_redirect(results)
    # And while signed out, the account pages send people to /login with a safe next.
    response = app.test_client().get("/account/?" + urlencode({"x": f"//{EVIL}"}))
    assert off_site(response) is None


def test_stepup_return_to(app, factory, runtime, db):
    # Not signed in: to the login page, carrying return_to along.
    anon = app.test_client()
    results = [(value, chase(anon, anon.get("/stepup?" + urlencode({"return_to": value})))) for value in HOSTILE]
    _assert_no_open_redirect(results)
    # Signed in at the second level: step-up is done and goes straight "back".
    identity = factory.identity()
    phone, _codes = enrol_directly(runtime, db, identity)
    browser = app.test_client()
    assert path_of(_login(browser, identity).location) == "/login/second-step"
    page = browser.get("/login/second-step")
    done = browser.post("/login/second-step", data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                                    "code": phone.code()})
    assert done.status_code == 302, done.get_data(as_text=True)[:300]
    results = []
    for value in HOSTILE:
        response = browser.get("/stepup?" + urlencode({"return_to": value}))
        assert response.status_code == 302, (value, response.status_code)
        results.append((value, chase(browser, response)))
    _assert_no_open_redirect(results)


def test_logout_post_logout_redirect_uri(app, client, factory, db):
    rp = logout_rp(client, factory, db)
    _identity, id_token = signed_in(rp, factory)
    hostile = HOSTILE + [PLRU + "/../evil", PLRU + "?next=https://evil.example", PLRU + ".evil.example",
                         PLRU.replace("rp.example", "rp.example.evil.example"), PLRU + "#x", PLRU.upper(),
                         PLRU.replace("https", "http")]
    results = []
    for value in hostile:
        # With a valid id_token_hint: redirect only to a registered URI.
        response = client.get("/logout?" + urlencode({"id_token_hint": id_token, "post_logout_redirect_uri": value,
                                                      "state": "s"}))
        results.append((value, chase(client, response)))
        # Without a hint: the confirmation form, then (CSRF token in hand) the same rule.
        browser = app.test_client()
        token = csrf_token(browser.get("/login").get_data(as_text=True))
        response = browser.post("/logout", data={"csrf_token": token, "client_id": rp.client_id,
                                                 "post_logout_redirect_uri": value})
        results.append((value + " (confirmed)", chase(browser, response)))
    _assert_no_open_redirect(results)
    # The registered one works: the rule above is not "never redirect".
    response = client.get("/logout?" + urlencode({"id_token_hint": id_token, "post_logout_redirect_uri": PLRU}))
    assert response.status_code == 302 and response.location.startswith(PLRU)


def test_authorize_redirect_uri(client, factory):
    rp = make_rp(client, factory)
    hostile = HOSTILE + [rp.redirect_uri + "/../evil", rp.redirect_uri + ".evil.example", rp.redirect_uri + "/x",
                         rp.redirect_uri.replace("rp.example", "rp.example.evil.example"),
                         rp.redirect_uri.replace("https://", "https://evil.example@"),
                         rp.redirect_uri.replace("https", "http"), rp.redirect_uri + "%2F..%2F..%2Fevil",
                         rp.redirect_uri + "#frag", rp.redirect_uri + "?next=https://evil.example"]
    results = []
    for value in hostile:
        for method in ("GET", "POST"):
            response = rp.authorize(redirect_uri=value, method=method)
            location = chase(client, response, allowed=(rp.redirect_uri,))
            results.append((f"{value} ({method})", location))
    _assert_no_open_redirect(results)
    # Errors with an unregistered redirect_uri are shown, not sent.
    response = rp.authorize(redirect_uri=f"https://{EVIL}/cb", prompt="bogus")
    assert response.status_code == 400 and "Location" not in response.headers
