"""OAuth 2.0 Demonstrating Proof of Possession (RFC 9449). Authlib has no DPoP.

What a proof must be (§4.3): a JWT with ``typ: dpop+jwt``, an asymmetric
``alg`` we support, the public ``jwk`` it is signed with (no private members),
``jti`` (single use: replay cache, §11.1), ``htm`` and ``htu`` equal to this
request's method and URL (no query or fragment), ``iat`` within SKEW seconds,
``nonce`` when we required one (§8; ``use_dpop_nonce`` with a ``DPoP-Nonce``
header otherwise), and at a resource ``ath`` = hash of the access token (§7).

At the token endpoint a valid proof binds the access token (``cnf.jkt``,
``token_type: DPoP``) and, for public clients, the refresh token family
(§5: "Refresh tokens issued to public clients MUST be bound"). A bound token
presented as a plain Bearer token, or with a proof by another key, is refused.
An authorization code is bound to a key by ``dpop_jkt`` at /authorize or by a
proof sent with the pushed request (§10, §10.1), and redeemed only with a proof
by that key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

from authlib.oauth2 import OAuth2Error
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jws import JWSRegistry
from joserfc.jwk import ECKey, OKPKey, RSAKey

from ..extensions import current_g, current_request, runtime
from ..security import derive_key

ALGORITHMS = ["ES256", "RS256", "PS256", "EdDSA"]
SKEW = 60
NONCE_WINDOW = 300
_KEY_TYPES = {"EC": ECKey, "RSA": RSAKey, "OKP": OKPKey}
_PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}
#: 43 base64url characters encode 32 bytes only when the last one carries four zero bits (one of AEIMQUYcgkosw048).
_THUMBPRINT = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")
#: A proof's header carries its public key: an RSA key does not fit joserfc's 512-byte default.
_REGISTRY = JWSRegistry(algorithms=ALGORITHMS)
_REGISTRY.max_header_length = 4096


class InvalidDPoPProofError(OAuth2Error):
    error = "invalid_dpop_proof"


class UseDPoPNonceError(OAuth2Error):
    error = "use_dpop_nonce"
    description = "Use the DPoP-Nonce in the next proof."

    def get_headers(self):
        return super().get_headers() + [("DPoP-Nonce", current_nonce())]


def _nonce_for(window: int) -> str:
    key = derive_key(runtime().settings.secret_key, "dpop-nonce")
    return base64.urlsafe_b64encode(hmac.new(key, str(window).encode(), hashlib.sha256).digest()[:18]).decode()


def current_nonce() -> str:
    """Stateless nonces: valid for this window and the one before, in every process."""
    return _nonce_for(int(time.time() // NONCE_WINDOW))


def _nonce_ok(nonce: str) -> bool:
    window = int(time.time() // NONCE_WINDOW)
    return any(hmac.compare_digest(nonce, _nonce_for(w)) for w in (window, window - 1))


def sent_proofs() -> list[str]:
    """The request's DPoP header values. A WSGI environ holds one value per header name (a server joins
    repeated headers with commas, which no proof survives), so this is a look-up: werkzeug's ``getlist``
    would walk every key of the environ, the process environment included under granian, on every token
    request. Read from the environ, request.headers' own source: a missing header costs Werkzeug a raised
    and caught KeyError."""
    value = current_request().environ.get("HTTP_DPOP")
    return [] if value is None else [value]


def request_url() -> str:
    """This request's URL as the client addressed it: issuer origin + path."""
    return runtime().settings.issuer + current_request().path


def verify_proof(proof: str, *, method: str, url: str, access_token: str | None = None,
                 require_nonce: bool = False) -> str:
    """Check one DPoP proof; return the JWK thumbprint (``jkt``) it proves.

    Raises InvalidDPoPProofError or UseDPoPNonceError."""
    if not proof or len(proof) > 8192 or proof.count(".") != 2:
        raise InvalidDPoPProofError("The DPoP proof is not a JWT.")
    try:
        header = jwt.decode(proof, lambda obj: _proof_key(obj.headers()), algorithms=ALGORITHMS,
                            registry=_REGISTRY)
    except (JoseError, ValueError, KeyError, TypeError) as error:
        raise InvalidDPoPProofError("The DPoP proof's signature or header is not valid.") from error
    claims, headers = header.claims, header.header
    if headers.get("typ") != "dpop+jwt":
        raise InvalidDPoPProofError("The DPoP proof's typ must be dpop+jwt.")
    if claims.get("htm") != method or not _same_url(claims.get("htu"), url):
        raise InvalidDPoPProofError("The DPoP proof is for another method or URL.")
    iat = claims.get("iat")
    if not isinstance(iat, int | float) or abs(time.time() - iat) > SKEW:
        raise InvalidDPoPProofError("The DPoP proof is too old or from the future.")
    if not isinstance(claims.get("jti"), str) or not claims["jti"] or len(claims["jti"]) > 256:
        raise InvalidDPoPProofError("The DPoP proof has no jti.")
    if access_token is not None:
        expected = base64.urlsafe_b64encode(hashlib.sha256(access_token.encode()).digest()).rstrip(b"=").decode()
        if not hmac.compare_digest(str(claims.get("ath", "")), expected):
            raise InvalidDPoPProofError("The DPoP proof's ath does not match the access token.")
    nonce = claims.get("nonce")
    if nonce is not None and not _nonce_ok(str(nonce)):
        raise UseDPoPNonceError()
    if require_nonce and nonce is None:
        raise UseDPoPNonceError()
    jkt = _KEY_TYPES[headers["jwk"]["kty"]].import_key(headers["jwk"]).thumbprint()
    # §11.1: a proof is accepted once; the key and jti together name it.
    if runtime().store.incr("dpop_jti", f"{jkt}:{claims['jti']}", SKEW * 2 + 10) != 1:
        raise InvalidDPoPProofError("The DPoP proof was already used.")
    return jkt


def _proof_key(headers: dict):
    jwk = headers.get("jwk")
    if not isinstance(jwk, dict) or _PRIVATE_MEMBERS & set(jwk) or jwk.get("kty") not in _KEY_TYPES:
        raise ValueError("the proof must carry a public asymmetric jwk")
    return _KEY_TYPES[jwk["kty"]].import_key(jwk)


def _same_url(htu, url: str) -> bool:
    if not isinstance(htu, str):
        return False
    # §4.3: compared without query and fragment.
    return htu.split("?", 1)[0].split("#", 1)[0] == url


def proved_key() -> str | None:
    """The key (``jkt``) of the DPoP proof sent with this POST to the token or PAR endpoint, checked (§4.3); None
    when none was sent. A server joins repeated DPoP headers with commas, which no proof survives."""
    proofs = sent_proofs()
    if not proofs:
        return None
    return verify_proof(proofs[0], method="POST", url=request_url(),
                        require_nonce=runtime().settings.dpop_require_nonce)


def check_token_request() -> None:
    """At the token endpoint: validate a DPoP header if sent; sets g.dpop_jkt (``current_jkt``)."""
    current_g().dpop_jkt = proved_key()


def current_jkt() -> str | None:
    return current_g().get("dpop_jkt")


def is_thumbprint(value) -> bool:
    """A JWK SHA-256 thumbprint as ``cnf.jkt`` and ``dpop_jkt`` carry it: 32 bytes, base64url without padding."""
    return isinstance(value, str) and _THUMBPRINT.fullmatch(value) is not None
