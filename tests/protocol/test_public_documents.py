"""Discovery and JWKS as RPs and resource servers fetch them (idp/oidc/documents.py answers them before Flask).

What a caller depends on: the same document on both discovery paths, caching headers it can act on (Cache-Control,
ETag with If-None-Match -> 304), cross-origin reads, HEAD, the headers every response of the IdP carries, a new
JWKS as soon as a key is published, and other methods still refused the way Flask refuses them.
"""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from idp.oidc import keys as keys_module
from idp.oidc.discovery import metadata

DOCUMENTS = ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server", "/jwks"]


@pytest.mark.parametrize("path", DOCUMENTS)
def test_document_headers(client, path):
    response = client.get(path, headers={"X-Request-ID": "rp-fetch-0001"})
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Request-ID"] == "rp-fetch-0001"
    assert re.fullmatch(r"public, max-age=\d+", response.headers["Cache-Control"])
    assert int(response.headers["Content-Length"]) == len(response.data)
    # The issuer is https://idp.test in the test settings: HSTS as on every other response.
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_discovery_is_the_metadata_of_the_settings(client, runtime):
    settings = runtime.settings
    expected = metadata(settings.issuer, settings.supported_locales)
    for path in DOCUMENTS[:2]:
        assert json.loads(client.get(path).data) == expected


def test_junk_request_id_is_replaced(client):
    response = client.get("/jwks", headers={"X-Request-ID": "<script>"})
    assert re.fullmatch(r"[0-9a-f]{16}", response.headers["X-Request-ID"])


@pytest.mark.parametrize("path", DOCUMENTS)
def test_conditional_get_answers_304_without_a_body(client, path):
    first = client.get(path)
    etag = first.headers["ETag"]
    again = client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.data == b""
    assert again.headers["ETag"] == etag
    other = client.get(path, headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.data == first.data
    # A cache that stored it as weak, or lists several, or asks for "anything": still not modified.
    assert client.get(path, headers={"If-None-Match": f'"x", W/{etag}'}).status_code == 304
    assert client.get(path, headers={"If-None-Match": "*"}).status_code == 304


@pytest.mark.parametrize("path", DOCUMENTS)
def test_head_has_the_headers_and_no_body(client, path):
    get = client.get(path)
    head = client.head(path)
    assert head.status_code == 200
    assert head.data == b""
    assert head.headers["Content-Length"] == get.headers["Content-Length"]
    assert head.headers["ETag"] == get.headers["ETag"]


@pytest.mark.parametrize("path", DOCUMENTS)
def test_other_methods_are_refused_as_before(client, path):
    assert client.post(path).status_code == 405
    assert client.delete(path).status_code == 405
    options = client.options(path)
    assert options.status_code == 200 and "GET" in options.headers["Allow"]


def test_jwks_follows_a_key_rotation(client, runtime):
    before = client.get("/jwks")
    kids_before = {key["kid"] for key in before.get_json()["keys"]}
    keys_module.rotate(runtime.settings.keys_dir)
    runtime.keys.refresh(force=True)
    after = client.get("/jwks")
    kids_after = {key["kid"] for key in after.get_json()["keys"]}
    # The rotation published a new "next" key per algorithm; the old ones are still there (retired or active).
    assert kids_after > kids_before
    assert after.headers["ETag"] != before.headers["ETag"]
    assert client.get("/jwks", headers={"If-None-Match": before.headers["ETag"]}).status_code == 200


def test_document_requests_are_counted(client):
    def count():
        text = client.get("/metrics").get_data(as_text=True)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (sample.name == "idp_http_requests_total" and sample.labels.get("endpoint") == "/jwks"
                        and sample.labels.get("method") == "GET" and sample.labels.get("status") == "200"):
                    return sample.value
        return 0

    before = count()
    client.get("/jwks")
    client.get("/jwks")
    assert count() == before + 2
