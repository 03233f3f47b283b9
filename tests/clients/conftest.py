"""The sample clients against a live IdP: the e2e live servers, reused."""

from tests.e2e.conftest import live_idp  # noqa: F401  (the live IdP fixture)
