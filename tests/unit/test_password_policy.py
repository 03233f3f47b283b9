"""NIST SP 800-63B-4 password policy (idp.identities.password_policy)."""

from __future__ import annotations

import unicodedata

import pytest

from idp.identities import password_policy as pp
from idp.identities.password_policy import Problem, check, strength

# Random-looking, so only the rule under test can object; prefixes of it are too.
STRONG = "Hw7!pQ2#nV9xLm4Tk8$rZ3@bF6&yJ1"
PASSPHRASE = "purple tractor sings at midnight"


def codes(password: str, **kwargs) -> list[str]:
    return [p.code for p in check(password, **kwargs)]


# -- acceptable passwords ------------------------------------------------------

def test_strong_password_has_no_problems():
    assert check(STRONG) == []


def test_long_passphrase_with_spaces_passes():
    assert check(PASSPHRASE) == []
    assert check("my cat ate seven blue umbrellas") == []


def test_unicode_passphrase_passes():
    assert check("Ωμέγα καφές στο μπαλκόνι τη νύχτα") == []
    assert check("雨の日の午後に静かな図書館で読書する") == []


def test_no_composition_rules():
    # All lower-case letters and spaces, no digits or symbols: fine.
    assert check("glacier muffin orbit cactus") == []


# -- length ----------------------------------------------------------------------

def test_length_boundary_14_15():
    assert codes(STRONG[:14]) == ["too_short"]
    assert check(STRONG[:14]) == [Problem("too_short", {"min": 15})]
    assert check(STRONG[:15]) == []


def test_min_length_is_configurable():
    assert check(STRONG[:12], min_length=12) == []
    assert check(STRONG[:11], min_length=12) == [Problem("too_short", {"min": 12})]


@pytest.mark.parametrize("bad", [0, -1, pp.MAX_LENGTH + 1])
def test_min_length_must_be_sane(bad):
    with pytest.raises(ValueError):
        check(STRONG, min_length=bad)


def test_length_boundary_1024_1025():
    base = (PASSPHRASE + " ") * 40
    assert check(base[:1024]) == []
    assert check(base[:1025]) == [Problem("too_long", {"max": 1024})]


def test_at_least_64_characters_allowed():
    assert check(STRONG + STRONG + "x" * 10) == []
    assert len(STRONG + STRONG + "x" * 10) >= 64


def test_empty_password():
    # Stock zxcvbn raises IndexError on "".
    assert codes("") == ["too_short", "weak"]
    assert strength("")["score"] == 0


def test_length_counts_code_points_not_bytes():
    password = "ñ" * 5 + "雨" * 5 + "ß" * 5  # 15 code points, 30+ UTF-8 bytes
    assert "too_short" not in codes(password)


# -- Unicode normalisation ---------------------------------------------------------

def test_composed_and_decomposed_accents_count_the_same():
    composed = STRONG[:14] + "\u00e9"      # é as one code point
    decomposed = STRONG[:14] + "e\u0301"   # e + combining acute: 16 code points raw
    assert unicodedata.normalize("NFC", decomposed) == composed
    assert check(composed) == check(decomposed) == []
    # 13 + é is 14 characters whichever way the é was typed.
    assert codes(STRONG[:13] + "\u00e9") == codes(STRONG[:13] + "e\u0301") == ["too_short"]


def test_compatibility_characters_are_normalised_before_the_blocklist():
    fullwidth = "ｐａｓｓｗｏｒｄ１２３"  # NFKC -> "password123"
    assert "common" in codes(fullwidth, min_length=8)


def test_uses_the_same_normalisation_as_the_identity_service():
    from idp.identities import service
    assert pp.normalize_password is service.normalize_password


# -- blocklist ---------------------------------------------------------------------

def test_blocklist_size_and_contents():
    blocklist = pp.blocklist()
    assert len(blocklist) >= 100_000
    for word in ("password", "123456", "qwerty", "iloveyou", "password1", "passwordpassword"):
        assert word in blocklist


def test_blocklist_contains_all_zxcvbn_passwords():
    from zxcvbn.frequency_lists import FREQUENCY_LISTS
    blocklist = pp.blocklist()
    assert all(word.lower() in blocklist for word in FREQUENCY_LISTS["passwords"])


def test_blocklist_entries_are_normalised():
    for word in list(pp.blocklist())[:5000]:
        assert word and word == unicodedata.normalize("NFKC", word).lower() and "\n" not in word


def test_blocklist_is_loaded_once():
    assert pp.blocklist() is pp.blocklist()


def test_common_password_is_case_insensitive():
    assert "common" in codes("PassWordPassWord")
    assert "common" in codes("Password", min_length=8)


@pytest.mark.parametrize("password", ["password123password", "passwordpassword", "qwertyuiopasdfgh",
                                      "123456789012345", "iloveyouiloveyou", "aaaaaaaaaaaaaaaa"])
def test_common_patterns_are_refused(password):
    problems = codes(password)
    assert problems and set(problems) <= {"common", "weak"}


# -- context-specific words ----------------------------------------------------------

def test_contains_email_local_part():
    email = "alice.smith@example.com"
    assert "contains_email" in codes("xAlice.Smithx" + STRONG, email=email)
    assert "contains_email" not in codes(STRONG, email=email)


def test_contains_email_ignores_subaddress_tag():
    assert "contains_email" in codes("bobcat" + STRONG, email="bobcat+idp@example.com")


def test_short_email_local_part_is_ignored():
    assert "contains_email" not in codes("al" + STRONG, email="al@example.com")
    assert "contains_email" in codes("ali" + STRONG, email="ali@example.com")


def test_contains_name():
    names = ("Mary-Ann", "Van der Berg")
    assert "contains_name" in codes(STRONG + "MARY", names=names)
    assert "contains_name" in codes(STRONG + "berg", names=names)
    assert "contains_name" in codes(STRONG + "mary-ann", names=names)
    assert "contains_name" in codes(STRONG + "van", names=("Jo", "Van"))  # 3 characters: checked
    assert "contains_name" not in codes(STRONG + "jo", names=("Jo",))  # shorter than 3: not checked
    assert "contains_name" not in codes(STRONG, names=names)


def test_names_and_email_are_optional():
    assert check(STRONG, email="", names=()) == []


def test_names_are_given_to_zxcvbn():
    # A passphrase made of the user's own details is weak even without the substring rules.
    assert pp._zxcvbn_score("zorbulaxquimbleton", []) >= 3
    assert pp._zxcvbn_score("zorbulaxquimbleton", ["zorbulax", "quimbleton"]) < 3
    assert "weak" in codes("zorbulaxquimbleton", names=("Zorbulax", "Quimbleton"))


# -- zxcvbn --------------------------------------------------------------------------

def test_weak_reports_score():
    [problem] = check("password123password")
    assert problem.code == "weak" and problem.params["score"] in (0, 1, 2)


@pytest.mark.parametrize("password", ["password123password", PASSPHRASE, STRONG, "1q2w3e4r5t6y7u8i",
                                      "Tr0ub4dor&3", "p@ssw0rd!p@ssw0rd", "Correct Horse 1990-05-12"])
def test_score_matches_stock_zxcvbn(password):
    import zxcvbn
    expected = zxcvbn.zxcvbn(password, user_inputs=["alice", "smith"])["score"]
    assert pp._zxcvbn_score(password, ["alice", "smith"]) == expected


def test_very_long_passwords_skip_zxcvbn():
    repetitive = "a" * (pp.ZXCVBN_SKIP_ABOVE + 1)
    assert check(repetitive) == []
    assert "weak" in codes("a" * pp.ZXCVBN_SKIP_ABOVE)


def test_adversarial_l33t_input_completes():
    # Stock zxcvbn needs tens of seconds here; the bounded matcher does not (no timing asserted).
    codes("4@8({[<3691!|70$5+%2" * 10)


# -- strength() ----------------------------------------------------------------------

def test_strength_shape():
    result = strength(PASSPHRASE)
    assert set(result) == {"score", "problems", "acceptable"}
    assert isinstance(result["score"], int) and 0 <= result["score"] <= 4
    assert result == {"score": result["score"], "problems": [], "acceptable": True}
    assert result["score"] >= 3


def test_strength_of_refused_password():
    result = strength("password")
    assert result["acceptable"] is False
    assert result["problems"] == ["too_short", "common", "weak"]
    assert 0 <= result["score"] <= 2


def test_strength_score_capped_while_there_are_problems():
    result = strength(STRONG[:14])
    assert result["problems"] == ["too_short"] and result["score"] <= 2


def test_strength_passes_context():
    result = strength(STRONG + "smith", email="jsmith@example.com", names=("John", "Smith"))
    assert result["problems"] == ["contains_name"]
    assert result["acceptable"] is False


def test_problem_is_frozen():
    problem = Problem("too_short", {"min": 15})
    with pytest.raises(AttributeError):
        problem.code = "x"  # type: ignore[misc]
