"""Key lifecycle: next keys are published before they sign; retired keys until their tokens expire."""

from __future__ import annotations

import json
import time

import pytest

from idp.oidc import keys


def states(directory):
    return {(k.alg, k.state) for k in keys.load_directory(directory)}


def test_generate_creates_active_and_next_per_algorithm(tmp_path):
    created = keys.generate(tmp_path)
    assert len(created) == 4
    assert states(tmp_path) == {("RS256", "active"), ("RS256", "next"), ("ES256", "active"), ("ES256", "next")}
    assert keys.generate(tmp_path) == []  # idempotent
    for path in tmp_path.glob("*.json"):
        assert path.stat().st_mode & 0o077 == 0, "private keys must not be readable by others"


def test_rotation_publishes_next_before_it_signs_and_keeps_retired(tmp_path):
    keys.generate(tmp_path)
    ring = keys.KeyRing(tmp_path, max_token_ttl=3600, reload_interval=0)
    before_active = ring.signing_key("RS256").kid
    published_before = {k["kid"] for k in ring.jwks()["keys"]}
    next_kid = next(k.kid for k in keys.load_directory(tmp_path) if k.alg == "RS256" and k.state == "next")
    assert next_kid in published_before  # published before it ever signs

    keys.rotate(tmp_path)
    ring.refresh(force=True)
    assert ring.signing_key("RS256").kid == next_kid
    published_after = {k["kid"] for k in ring.jwks()["keys"]}
    assert before_active in published_after  # retired but still verifiable
    assert len(published_after) == 6  # retired + active + new next, per algorithm


def test_retired_keys_drop_out_after_max_token_ttl(tmp_path):
    keys.generate(tmp_path)
    keys.rotate(tmp_path)
    old = next(k for k in keys.load_directory(tmp_path) if k.state == "retired" and k.alg == "ES256")
    data = json.loads((tmp_path / f"{old.kid}.json").read_text())
    data["retired_at"] = int(time.time()) - 7200
    (tmp_path / f"{old.kid}.json").write_text(json.dumps(data))
    ring = keys.KeyRing(tmp_path, max_token_ttl=3600)
    assert old.kid not in {k["kid"] for k in ring.jwks()["keys"]}
    assert old.kid in keys.prune(tmp_path, 3600)
    assert not (tmp_path / f"{old.kid}.json").exists()


def test_jwks_has_no_private_members(tmp_path):
    keys.generate(tmp_path)
    ring = keys.KeyRing(tmp_path, 3600)
    for jwk in ring.jwks()["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk)
        assert jwk["use"] == "sig" and jwk["kid"] and jwk["alg"] in ("RS256", "ES256")


def test_missing_keys_is_a_clear_error(tmp_path):
    with pytest.raises(keys.KeysError, match="idp keys generate"):
        keys.KeyRing(tmp_path, 3600)


def test_key_ring_notices_rotation_by_another_process(tmp_path):
    keys.generate(tmp_path)
    ring = keys.KeyRing(tmp_path, 3600, reload_interval=0)
    first = ring.signing_key("ES256").kid
    keys.rotate(tmp_path)  # as `idp keys rotate` would, from another process
    assert ring.signing_key("ES256").kid != first
