"""Password policy after NIST SP 800-63B-4 (2025), §3.1.1.2 "Password Verifiers".

Pure functions, no Flask: callers turn the problem codes into UI text.

What the policy enforces (on the NFKC-normalised password, lengths counted in
Unicode code points):

    too_short       fewer than ``min_length`` characters (default 15, the
                    SP 800-63B-4 minimum for a password used as a single factor)
    too_long        more than ``MAX_LENGTH`` (1024) characters; NIST requires
                    allowing at least 64
    common          on the blocklist of common / breached passwords (compared
                    lower-cased)
    contains_email  contains the e-mail address's local part (case-insensitive)
    contains_name   contains one of the person's names (case-insensitive)
    weak            zxcvbn estimates it guessable (score < 3); e-mail and names
                    count as known to the attacker

Deliberately absent, as SP 800-63B-4 forbids them: composition rules (no
"one digit, one symbol"), periodic expiry, hints and knowledge-based prompts.
Spaces and any printable or Unicode characters are allowed.

Cost bounds of the zxcvbn estimate (measured on zxcvbn 4.5.0): stock zxcvbn
is quadratic in the length times up to 736 l33t substitution tables, so a
200-character string of l33t symbols takes ~30 s and even 32 characters can
take ~1 s -- a denial-of-service vector behind a live strength meter.  So:

* passwords longer than ``ZXCVBN_SKIP_ABOVE`` (200) characters are not
  estimated and count as strong (length alone makes them so);
* otherwise only the first ``ZXCVBN_MAX_CHARS`` (64) characters are estimated
  (a prefix is never stronger than the whole, so this errs on the safe side);
* l33t matching tries at most ``L33T_MAX_SUBS`` substitution tables.

Worst case measured with these bounds: ~0.2 s of CPU per call; the score is
identical to stock zxcvbn's for ordinary input.  A public strength endpoint
should still be rate limited.

That needs zxcvbn's matchers to be driven from here (``_zxcvbn_score``)
rather than through ``zxcvbn.zxcvbn()``, which has no such knobs and, as a
bonus, stores ``user_inputs`` in a module global that concurrent threads would
overwrite for each other.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import re
import unicodedata
from dataclasses import dataclass, field
from importlib import resources

from .service import MAX_PASSWORD_LENGTH, normalize_password

DEFAULT_MIN_LENGTH = 15
MAX_LENGTH = MAX_PASSWORD_LENGTH  # 1024; authenticate() truncates at the same length
MIN_CONTEXT_WORD = 3  # shorter e-mail local parts and names are not checked
WEAK_BELOW_SCORE = 3  # zxcvbn score 0..4; 3 = "safely unguessable" offline against a slow hash
ZXCVBN_SKIP_ABOVE = 200
ZXCVBN_MAX_CHARS = 64
L33T_MAX_SUBS = 8

BLOCKLIST_RESOURCE = ("data", "blocklist.txt.gz")

TOO_SHORT = "too_short"
TOO_LONG = "too_long"
COMMON = "common"
CONTAINS_EMAIL = "contains_email"
CONTAINS_NAME = "contains_name"
WEAK = "weak"

_NAME_SEPARATORS = re.compile(r"[\s\-]+")


@dataclass(frozen=True)
class Problem:
    code: str
    params: dict = field(default_factory=dict)


def check(password: str, *, email: str = "", names: tuple[str, ...] = (),
          min_length: int = DEFAULT_MIN_LENGTH) -> list[Problem]:
    """All the policy's objections to ``password``; an empty list means acceptable."""
    problems, _ = _evaluate(password, email=email, names=names, min_length=min_length)
    return problems


def strength(password: str, *, email: str = "", names: tuple[str, ...] = (),
             min_length: int = DEFAULT_MIN_LENGTH) -> dict:
    """For a live strength meter: ``{"score": 0-4, "problems": [codes], "acceptable": bool}``.

    ``score`` is zxcvbn's estimate, capped at 2 while there are problems so the
    meter never shows "good" for a password that will be refused.
    """
    problems, score = _evaluate(password, email=email, names=names, min_length=min_length)
    if problems:
        score = min(score, WEAK_BELOW_SCORE - 1)
    return {"score": score, "problems": [p.code for p in problems], "acceptable": not problems}


@functools.lru_cache(maxsize=1)
def blocklist() -> frozenset[str]:
    """The common-password blocklist (lower-cased, NFKC), loaded once per process.

    About 100,000 entries: ~0.2 s and ~10 MB as a frozenset.  Regenerate the
    file with ``idp/identities/data/make_blocklist.py``.
    """
    resource = resources.files(__package__).joinpath(*BLOCKLIST_RESOURCE)
    with resource.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        return frozenset(line for line in lines.read().split("\n") if line)


def warm_up() -> None:
    """Load the blocklist and zxcvbn's dictionaries now rather than on the first request."""
    blocklist()
    _zxcvbn()


# -- internals ---------------------------------------------------------------

def _evaluate(password: str, *, email: str, names: tuple[str, ...], min_length: int) -> tuple[list[Problem], int]:
    if not 1 <= min_length <= MAX_LENGTH:
        raise ValueError(f"min_length must be between 1 and {MAX_LENGTH}")
    password = normalize_password(password)
    folded = password.casefold()
    problems: list[Problem] = []

    length = len(password)  # code points, after NFKC
    if length < min_length:
        problems.append(Problem(TOO_SHORT, {"min": min_length}))
    elif length > MAX_LENGTH:
        problems.append(Problem(TOO_LONG, {"max": MAX_LENGTH}))

    if password.lower() in blocklist():
        problems.append(Problem(COMMON, {}))

    email_words = _email_words(email)
    if any(word in folded for word in email_words):
        problems.append(Problem(CONTAINS_EMAIL, {}))

    name_words = _name_words(names)
    if any(word in folded for word in name_words):
        problems.append(Problem(CONTAINS_NAME, {}))

    if length > ZXCVBN_SKIP_ABOVE:
        score = 4
    elif not password:
        score = 0  # zxcvbn's scoring raises IndexError on ""
        problems.append(Problem(WEAK, {"score": score}))
    else:
        user_inputs = [w for w in (_fold(email), *email_words, *name_words) if w]
        score = _zxcvbn_score(password[:ZXCVBN_MAX_CHARS], user_inputs)
        if score < WEAK_BELOW_SCORE:
            problems.append(Problem(WEAK, {"score": score}))
    return problems, score


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text or "").strip().casefold()


def _email_words(email: str) -> set[str]:
    """The local part, and the local part without a "+tag" sub-address."""
    local = _fold(email).rpartition("@")[0] or _fold(email)
    words = {local, local.partition("+")[0]}
    return {w for w in words if len(w) >= MIN_CONTEXT_WORD}


def _name_words(names: tuple[str, ...] | list[str]) -> set[str]:
    """Each name, and each word of a multi-word or hyphenated name ("Mary-Ann Smith")."""
    words: set[str] = set()
    for name in names:
        name = _fold(name)
        words.add(name)
        words.update(_NAME_SEPARATORS.split(name))
    return {w for w in words if len(w) >= MIN_CONTEXT_WORD}


@functools.lru_cache(maxsize=1)
def _zxcvbn():
    # Imported lazily: loading zxcvbn's dictionaries takes ~0.5 s and ~12 MB.
    from zxcvbn import matching, scoring, time_estimates
    return matching, scoring, time_estimates


def _zxcvbn_score(password: str, user_inputs: list[str]) -> int:
    """zxcvbn's 0-4 score, as ``zxcvbn.zxcvbn(password, user_inputs)["score"]``,
    with bounded l33t matching and no shared mutable state."""
    matching, scoring, time_estimates = _zxcvbn()
    dictionaries = dict(matching.RANKED_DICTIONARIES)
    dictionaries["user_inputs"] = matching.build_ranked_dict([w.lower() for w in user_inputs])
    matches = _omnimatch(password, dictionaries)
    guesses = scoring.most_guessable_match_sequence(password, matches)["guesses"]
    return time_estimates.guesses_to_score(guesses)


# The two functions below follow zxcvbn 4.5.0's matching.l33t_match and
# matching.repeat_match (MIT licence, (c) Dropbox / Ryan Pearl), changed only to
# cap the l33t substitution tables and to recurse through _omnimatch with the
# caller's dictionaries.

def _omnimatch(password: str, dictionaries: dict) -> list[dict]:
    matching, _, _ = _zxcvbn()
    matchers = (matching.dictionary_match, matching.reverse_dictionary_match, _l33t_match, matching.spatial_match,
                _repeat_match, matching.sequence_match, matching.regex_match, matching.date_match)
    matches = []
    for matcher in matchers:
        matches.extend(matcher(password, _ranked_dictionaries=dictionaries))
    return sorted(matches, key=lambda m: (m["i"], m["j"]))


def _l33t_match(password: str, _ranked_dictionaries: dict) -> list[dict]:
    matching, _, _ = _zxcvbn()
    subtable = matching.relevant_l33t_subtable(password, matching.L33T_TABLE)
    matches = []
    for sub in itertools.islice(matching.enumerate_l33t_subs(subtable), L33T_MAX_SUBS):
        if not sub:
            break
        subbed = matching.translate(password, sub)
        for match in matching.dictionary_match(subbed, _ranked_dictionaries):
            token = password[match["i"]:match["j"] + 1]
            if token.lower() == match["matched_word"]:
                continue  # only matches that contain an actual substitution
            match_sub = {k: v for k, v in sub.items() if k in token}
            match.update(l33t=True, token=token, sub=match_sub,
                         sub_display=", ".join(f"{k} -> {v}" for k, v in match_sub.items()))
            matches.append(match)
    matches = [m for m in matches if len(m["token"]) > 1]
    return sorted(matches, key=lambda m: (m["i"], m["j"]))


_GREEDY = re.compile(r"(.+)\1+")
_LAZY = re.compile(r"(.+?)\1+")
_LAZY_ANCHORED = re.compile(r"^(.+?)\1+$")


def _repeat_match(password: str, _ranked_dictionaries: dict) -> list[dict]:
    _, scoring, _ = _zxcvbn()
    matches = []
    last_index = 0
    while last_index < len(password):
        greedy = _GREEDY.search(password, pos=last_index)
        lazy = _LAZY.search(password, pos=last_index)
        if not greedy:
            break
        if len(greedy.group(0)) > len(lazy.group(0)):
            # greedy beats lazy for "aabaab"; its repeated string may itself repeat
            match = greedy
            base_token = _LAZY_ANCHORED.search(match.group(0)).group(1)
        else:
            match = lazy
            base_token = match.group(1)
        i, j = match.span()[0], match.span()[1] - 1
        base = scoring.most_guessable_match_sequence(base_token, _omnimatch(base_token, _ranked_dictionaries))
        matches.append({
            "pattern": "repeat",
            "i": i,
            "j": j,
            "token": match.group(0),
            "base_token": base_token,
            "base_guesses": base["guesses"],
            "base_matches": base["sequence"],
            "repeat_count": len(match.group(0)) / len(base_token),
        })
        last_index = j + 1
    return matches
