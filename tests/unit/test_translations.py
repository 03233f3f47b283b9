"""Message catalogues: complete, compiled, current, and used by the pages.

English is the source language; Danish lives in idp/translations/da. When a UI
string is added or changed, these tests say which pybabel command to run
(see docs/i18n.md).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_keywords, parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

from tests.helpers.oidc import make_rp, path_of

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "idp"
BABEL_CFG = ROOT / "babel.cfg"
TRANSLATIONS = PACKAGE / "translations"
POT = TRANSLATIONS / "messages.pot"
LOCALES = ("da",)

#: Keywords beyond Babel's defaults (_, gettext, ngettext, ...), as in docs/i18n.md.
EXTRA_KEYWORDS = ("_l", "lazy_gettext")

EXTRACT = "pybabel extract -F babel.cfg -k _l -k lazy_gettext -o idp/translations/messages.pot idp"
UPDATE = "pybabel update -i idp/translations/messages.pot -d idp/translations"
COMPILE = "pybabel compile -d idp/translations"


def _po(locale: str) -> Path:
    return TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po"


def _mo(locale: str) -> Path:
    return TRANSLATIONS / locale / "LC_MESSAGES" / "messages.mo"


def _read_po(path: Path, locale: str | None = None):
    with path.open("rb") as fileobj:
        return read_po(fileobj, locale=locale)


def _keys(catalog) -> set:
    """(context, msgid) of every message but the header."""
    return {(message.context, message.id) for message in catalog if message.id}


def _describe(keys) -> str:
    return "\n".join(f"  {msgid!r}" + (f" (context {context!r})" if context else "")
                     for context, msgid in sorted(keys, key=repr))


def test_template_is_current():
    """Every string in the code and templates is in messages.pot, and nothing else."""
    with BABEL_CFG.open(encoding="utf-8") as fileobj:
        method_map, options_map = parse_mapping_cfg(fileobj, str(BABEL_CFG))
    keywords = {**DEFAULT_KEYWORDS, **parse_keywords(list(EXTRA_KEYWORDS))}
    extracted = {(context, msgid)
                 for _filename, _lineno, msgid, _comments, context
                 in extract_from_dir(str(PACKAGE), method_map, options_map, keywords=keywords)}
    assert extracted, "extraction found no strings: is babel.cfg right?"
    committed = _keys(_read_po(POT))

    missing, stale = extracted - committed, committed - extracted
    assert not missing and not stale, (
        "idp/translations/messages.pot is out of date with the code and templates.\n"
        f"New strings not in it:\n{_describe(missing) or '  (none)'}\n"
        f"Strings in it no longer used:\n{_describe(stale) or '  (none)'}\n"
        f"Run from the repository root:\n  {EXTRACT}\n  {UPDATE}\n"
        f"then translate the new entries in idp/translations/*/LC_MESSAGES/messages.po and run:\n  {COMPILE}")


@pytest.mark.parametrize("locale", LOCALES)
def test_catalogue_translates_every_message(locale):
    template = _read_po(POT)
    catalog = _read_po(_po(locale), locale)

    missing = _keys(template) - _keys(catalog)
    assert not missing, (f"{_po(locale).relative_to(ROOT)} lacks strings from messages.pot:\n{_describe(missing)}\n"
                         f"Run:\n  {UPDATE}\nthen translate them and run:\n  {COMPILE}")
    stale = _keys(catalog) - _keys(template)
    assert not stale, (f"{_po(locale).relative_to(ROOT)} has strings no longer in messages.pot:\n{_describe(stale)}\n"
                       f"Run:\n  {UPDATE}\n  {COMPILE}")

    untranslated, fuzzy = set(), set()
    for message in catalog:
        if not message.id:
            continue
        strings = message.string if isinstance(message.string, (tuple, list)) else (message.string,)
        if not all(s and s.strip() for s in strings):
            untranslated.add((message.context, message.id))
        if message.fuzzy:
            fuzzy.add((message.context, message.id))
    assert not untranslated, (f"Untranslated in {_po(locale).relative_to(ROOT)}:\n{_describe(untranslated)}\n"
                              f"Translate them, then run:\n  {COMPILE}")
    assert not fuzzy, (f"Fuzzy (unreviewed) in {_po(locale).relative_to(ROOT)}:\n{_describe(fuzzy)}\n"
                       f"Check each translation, remove its '#, fuzzy' flag, then run:\n  {COMPILE}")


@pytest.mark.parametrize("locale", LOCALES)
def test_translations_keep_placeholders(locale):
    """%(client)s and friends survive translation, or rendering would fail or lose data."""
    catalog = _read_po(_po(locale), locale)
    problems = [f"  {message.id!r}: {'; '.join(str(error) for error in errors)}"
                for message, errors in catalog.check()]
    assert not problems, f"{_po(locale).relative_to(ROOT)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("locale", LOCALES)
def test_compiled_catalogue_is_current(locale):
    """The committed .mo says what the .po says (content compared, not bytes)."""
    compiled = io.BytesIO()
    write_mo(compiled, _read_po(_po(locale), locale))
    compiled.seek(0)
    expected = Translations(compiled)
    with _mo(locale).open("rb") as fileobj:
        committed = Translations(fileobj)

    def messages(translations):
        # The header ("" key) carries dates only; the messages are what users see.
        return {key: value for key, value in translations._catalog.items() if key != ""}

    assert messages(committed) == messages(expected), (
        f"{_mo(locale).relative_to(ROOT)} is out of date with its .po file. Run:\n  {COMPILE}")


# -- The pages ---------------------------------------------------------------

def _login_page(client, factory, **authorize):
    rp = make_rp(client, factory)
    response = rp.authorize(**authorize)
    assert response.status_code == 302 and "/login" in response.location, (response.status_code, response.location)
    page = client.get(path_of(response.location))
    assert page.status_code == 200
    return page.get_data(as_text=True)


def _assert_danish(html):
    assert '<html lang="da">' in html
    assert "Log ind" in html
    assert "E-mailadresse" in html and "Adgangskode" in html
    assert "Sign in" not in html and "Password" not in html


def test_login_page_in_danish_from_ui_locales(client, factory):
    _assert_danish(_login_page(client, factory, ui_locales="da"))


def test_login_page_in_danish_from_ui_locales_with_region_and_fallbacks(client, factory):
    _assert_danish(_login_page(client, factory, ui_locales="fr-CA da-DK en"))


def test_login_page_in_danish_from_accept_language(client, factory):
    # A browser sends its languages on every request.
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "da-DK,da;q=0.9,en;q=0.5"
    _assert_danish(_login_page(client, factory))


def test_ui_locales_beats_accept_language(client, factory):
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "da"
    html = _login_page(client, factory, ui_locales="en")
    assert '<html lang="en">' in html
    assert "Sign in" in html and "Log ind" not in html


def test_login_page_in_english_by_default(client, factory):
    html = _login_page(client, factory)
    assert '<html lang="en">' in html
    assert "Sign in" in html and "E-mail address" in html and "Password" in html
    assert "Log ind" not in html


def test_consent_page_in_danish_including_scope_descriptions(client, factory):
    """Scope descriptions are lazy strings in Python code: they translate at render time."""
    identity = factory.identity()
    rp = make_rp(client, factory)
    response = rp.follow(rp.login(rp.authorize(ui_locales="da"), identity.email))
    assert response.status_code == 302 and "/consent" in response.location, (response.status_code, response.location)
    html = client.get(path_of(response.location)).get_data(as_text=True)
    assert '<html lang="da">' in html
    assert "Tillad" in html and "Afvis" in html
    assert "Dit navn" in html and "Din e-mailadresse" in html
    assert "Your name" not in html
