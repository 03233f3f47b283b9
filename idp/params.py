"""Request parameters (and cookies) whose ``get`` answers a missing name without raising.

Werkzeug's ``MultiDict.get`` looks a name up with ``self[name]`` and catches the ``BadRequestKeyError`` that
raises for a missing one, building the exception (with its HTTP description) each time. Most of OpenID
Connect's optional parameters (``nonce``, ``prompt``, ``max_age``, ``request``, ``ui_locales``, ...) are
missing from most requests, and Authlib, the prompt policy and our views ask for them a few dozen times per
authorization request: 8 % of it went into building those exceptions (bench/README.md). Values, order,
repeated names and ``type=`` conversion are Werkzeug's.
"""

from __future__ import annotations

from flask import Request
from werkzeug.datastructures import ImmutableMultiDict, MultiDict


class _AnswersMissing:
    def get(self, key, default=None, type=None):  # noqa: A002 - Werkzeug's signature
        if key not in self:
            return default
        return super().get(key, default, type)


class Params(_AnswersMissing, MultiDict):
    """A mutable set of parameters (an authorization request's, as it is handled and resumed)."""


class ImmutableParams(_AnswersMissing, ImmutableMultiDict):
    """``request.args`` and ``request.form``."""

    def copy(self) -> Params:
        return Params(self)


class IdPRequest(Request):
    parameter_storage_class = ImmutableParams
    dict_storage_class = ImmutableParams  # request.cookies
