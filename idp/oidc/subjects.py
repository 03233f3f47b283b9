"""Subject identifiers (OIDC Core §8): public (the identity id) or pairwise per sector.

A pairwise ``sub`` is a keyed hash of the client's sector (the host of its
sector_identifier_uri, else of its redirect URIs) and the identity, so two RPs
of different sectors cannot correlate a person by ``sub``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlsplit

from ..extensions import runtime
from ..security import derive_key


def sector_of(client) -> str:
    uri = client.meta("sector_identifier_uri") or (client.redirect_uris[0] if client.redirect_uris else "")
    return urlsplit(uri).hostname or client.client_id


def subject_for(identity, client) -> str:
    return subject_for_id(identity.id, client)


def subject_for_id(identity_id: str, client) -> str:
    """The ``sub`` ``client`` sees for an identity, from its id alone."""
    if client is None or client.meta("subject_type") != "pairwise":
        return identity_id
    key = derive_key(runtime().settings.pairwise_salt or runtime().settings.secret_key, "pairwise-sub")
    digest = hmac.new(key, f"{sector_of(client)}|{identity_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
