"""A tiny payments API inside the sample RP, protected by ``clients/resource_server.py``.

Listing payments needs a token for one agreement; approving one also needs the
second authentication level (acr mfa). A password-only token gets the RFC 9470
challenge, which the RP's front end answers by sending the person to step up.
The data is fake and kept in memory, keyed by agreement number.
"""

from __future__ import annotations

import hashlib
import threading
import time

from flask import Blueprint, g, jsonify

from .. import stepup
from ..resource_server import ResourceServer

PAYEES = ("Nordlys Kontorartikler ApS", "Havnens Rengøring I/S", "Bryggeriet Vestfyn A/S", "Dansk Kaffeservice",
          "Lundgaard Revision", "Skovbo Transport ApS")


def payments_for(agreement_id: str) -> list[dict]:
    """Three pending payments, the same every time for one agreement."""
    seed = hashlib.sha256(agreement_id.encode()).digest()
    return [{"id": f"{agreement_id}-{i + 1}", "payee": PAYEES[seed[i] % len(PAYEES)],
             "amount": f"{(seed[i + 3] * 97 + 1000):,}.00", "currency": "DKK"} for i in range(3)]


def create_blueprint(rs: ResourceServer) -> Blueprint:
    bp = Blueprint("payments_api", __name__, url_prefix="/api")
    approvals: dict[tuple[str, str], dict] = {}
    lock = threading.Lock()

    def listing(agreement_id: str) -> list[dict]:
        with lock:
            return [{**p, "approval": approvals.get((agreement_id, p["id"]))} for p in payments_for(agreement_id)]

    @bp.get("/payments")
    @rs.require(agreement=True)
    def list_payments():
        claims = g.access_token
        return jsonify(agreement_id=claims["agreement_id"], payments=listing(claims["agreement_id"]))

    @bp.post("/payments/<payment_id>/approve")
    @rs.require(agreement=True, roles=["superuser", "user"], acr=[stepup.ACR_MFA])
    def approve(payment_id):
        claims = g.access_token
        if payment_id not in {p["id"] for p in payments_for(claims["agreement_id"])}:
            return jsonify(error="not_found", error_description="No such payment in this agreement."), 404
        with lock:
            approval = approvals.setdefault((claims["agreement_id"], payment_id),
                                            {"approved_by": claims["sub"], "approved_at": int(time.time()),
                                             "acr": claims["acr"]})
        return jsonify(id=payment_id, approval=approval)

    return bp
