"""Making error descriptions safe to send.

RFC 6749 §5.2: error_description "MUST NOT include characters outside the set
%x20-21 / %x23-5B / %x5D-7E" (Authlib enforces it by raising). Descriptions
that quote what a client sent go through ``safe`` first.
"""

from __future__ import annotations


def safe(text: str, limit: int = 300) -> str:
    cleaned = "".join(c if (c in " !" or "\x23" <= c <= "\x5b" or "\x5d" <= c <= "\x7e") else "?" for c in text)
    return cleaned[:limit]
