"""Which agreements a person may work in through a given client, and choosing one.

Every query is paged or limited in the database and driven by the
(identity_id, last_used_at) index: a bookkeeper with 10,000 agreements never
has them all loaded into Python.
"""

from __future__ import annotations

import base64
import functools
import json
from dataclasses import dataclass

from sqlalchemy import Select, and_, bindparam, func, not_, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, contains_eager

from ..storage.db import Database, utcnow
from ..storage.direct import DirectStatement
from .models import Agreement, Membership, Role

CHOOSER_LIMIT = 50
MAX_PAGE = 100


@dataclass(frozen=True)
class Selected:
    """The agreement a login works in, as every token carries it."""

    agreement_pk: str
    number: str
    name: str
    product: str
    role: str
    require_second_factor: bool = False

    def claims(self) -> dict:
        return {"agreement_id": self.number, "agreement_name": self.name, "agreement_product": self.product,
                "agreement_role": self.role}


def _selected(membership: Membership) -> Selected:
    agreement = membership.agreement
    return Selected(agreement.id, agreement.number, agreement.name, agreement.product_id, membership.role,
                    agreement.require_second_factor)


def eligible(identity_id: str, client) -> Select:
    """Memberships the identity may use with ``client``: open agreements of the
    client's product (all for a product-neutral client), minus time-registrant
    memberships that the agreement restricts to mobile apps."""
    # contains_eager: the join below also loads the agreement (no second join).
    return _eligibility(select(Membership).join(Membership.agreement).options(contains_eager(Membership.agreement)),
                        identity_id, *_client_terms(client))


def _eligible_ids(identity_id: str, client) -> Select:
    """``eligible`` as membership ids only."""
    return _eligibility(select(Membership.id).join(Membership.agreement), identity_id, *_client_terms(client))


def _client_terms(client) -> tuple[str | None, bool]:
    """What of a client decides eligibility: its product (None: product-neutral) and whether it is a mobile app."""
    if client is None:
        return None, False
    return client.product_id or None, bool(client.mobile_app)


def _eligibility(query: Select, identity_id, product_id, mobile_app: bool) -> Select:
    """``identity_id`` and ``product_id`` are values, or bind parameters of a statement compiled once."""
    query = query.where(Membership.identity_id == identity_id, Agreement.closed.is_(False))
    if product_id is not None:
        query = query.where(Agreement.product_id == product_id)
    if not mobile_app:
        query = query.where(not_(and_(Membership.role == Role.time_registrant.value,
                                      Agreement.time_registrants_mobile_only.is_(True))))
    return query


def _search(query: Select, q: str | None) -> Select:
    q = (q or "").strip()
    if not q:
        return query
    if len(q) < 3:
        # Too short for a name search to mean much (or to use the trigram index).
        return query.where(Agreement.number.startswith(q, autoescape=True))
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return query.where(or_(Agreement.number.startswith(q, autoescape=True),
                           func.lower(Agreement.name).like(f"%{escaped.lower()}%", escape="\\")))


def first_eligible(database: Database, identity_id: str, client, limit: int = 2) -> list[Selected]:
    """Up to ``limit`` eligible agreements: enough to tell none, exactly one, or several."""
    with database.own_reads(held=True) as connection:
        return eligible_on(connection, identity_id, client, limit=limit)


def find_eligible(database: Database, identity_id: str, client, number: str | None) -> Selected | None:
    """The identity's eligible agreement with this public number, or None."""
    if not number or len(number) > 32:
        return None
    with database.own_reads(held=True) as connection:
        found = eligible_on(connection, identity_id, client, number=number)
    return found[0] if found else None


def current(database: Database, identity_id: str, agreement_pk: str, client) -> Selected | None:
    """Re-check a selection (at every refresh of a token that carries it): None once the membership is gone."""
    with database.own_reads(held=True) as connection:
        found = eligible_on(connection, identity_id, client, agreement_pk=agreement_pk)
    return found[0] if found else None


def eligible_on(connection: Connection, identity_id: str, client, *, agreement_pk: str | None = None,
                number: str | None = None, limit: int | None = None) -> list[Selected]:
    """``eligible`` as ``Selected``: the one agreement with this key or number, or the first ``limit``.

    Direct statements (idp/storage/direct.py), run on ``connection``: every authorization in an agreement
    looks its agreement up and every refresh of its tokens checks it again. The ORM query in the request's
    session cost BEGIN, the query and a ROLLBACK on PostgreSQL and loading two objects: with the mark of last
    use, on PostgreSQL about as much CPU as the rest of an SSO hop (bench/README.md). The request's reading
    connection (``Database.own_reads``) is in autocommit."""
    statement, params = eligible_lookup(identity_id, client, agreement_pk=agreement_pk, number=number, limit=limit)
    return [Selected(**row) for row in statement.all(connection, params)]


def eligible_lookup(identity_id: str, client, *, agreement_pk: str | None = None, number: str | None = None,
                    limit: int | None = None) -> tuple[DirectStatement, dict]:
    """The statement ``eligible_on`` runs and its values (bench/agreements.py explains it). One of
    ``agreement_pk``, ``number`` or ``limit``: never all of a bookkeeper's thousands of memberships."""
    product_id, mobile_app = _client_terms(client)
    params = {"identity_id": identity_id}
    if product_id is not None:
        params["product_id"] = product_id
    if agreement_pk is not None:
        params["agreement_pk"], by = agreement_pk, "agreement_pk"
    elif number is not None:
        params["number"], by = number, "number"
    elif limit is not None:
        by = limit
    else:
        raise TypeError("eligible_lookup needs agreement_pk, number or limit")
    return _eligible_statement(product_id is not None, mobile_app, by), params


@functools.cache
def _eligible_statement(by_product: bool, mobile_app: bool, by: str | int) -> DirectStatement:
    """``eligible`` with the columns of ``Selected``, for one kind of client and one kind of look-up: by
    ``agreement_pk``, by ``number``, or the first ``by`` (an int)."""
    query = (select(Agreement.id.label("agreement_pk"), Agreement.number, Agreement.name,
                    Agreement.product_id.label("product"), Membership.role, Agreement.require_second_factor)
             .select_from(Membership).join(Membership.agreement))
    query = _eligibility(query, bindparam("identity_id"), bindparam("product_id") if by_product else None, mobile_app)
    if by == "agreement_pk":
        query = query.where(Agreement.id == bindparam("agreement_pk"))
    elif by == "number":
        query = query.where(Agreement.number == bindparam("number"))
    else:
        query = query.limit(by)
    return DirectStatement(query)


def chooser_list(session: Session, identity_id: str, client, q: str | None = None,
                 limit: int = CHOOSER_LIMIT) -> list[Selected]:
    """For the chooser: most recently used first, then by number."""
    # Matches the (identity_id, last_used_at DESC NULLS LAST) index: no sort of all memberships.
    query = eligible(identity_id, client)
    if (q or "").strip():
        # A search finds its matches first (the trigram and number indexes, hashed against the person's
        # memberships), then orders those. Left to itself, PostgreSQL reads LIMIT 50 as "walk the memberships
        # in recency order until 50 match": one agreement look-up per membership, 60 ms for a bookkeeper
        # with 10,000 (bench/README.md). MATERIALIZED keeps the matching a step of its own.
        matching = _search(_eligible_ids(identity_id, client), q).cte("matching").prefix_with("MATERIALIZED")
        query = query.where(Membership.id.in_(select(matching.c.id)))
    query = query.order_by(Membership.last_used_at.desc().nulls_last(), Agreement.number).limit(limit)
    return [_selected(m) for m in session.execute(query).scalars()]


def mark_used(database: Database, identity_id: str, agreement_pk: str) -> None:
    """The chooser lists the most recently used first. A short transaction of its own (one statement in
    autocommit on PostgreSQL), as every authorization in an agreement makes it."""
    with database.own_transaction(held=True) as connection:
        _MARK_USED.execute(connection, {"member": identity_id, "agreement_pk": agreement_pk, "now": utcnow()})


_MARK_USED = DirectStatement(
    update(Membership.__table__)
    .where(Membership.__table__.c.identity_id == bindparam("member"),
           Membership.__table__.c.agreement_id == bindparam("agreement_pk"))
    .values(last_used_at=bindparam("now", type_=Membership.__table__.c.last_used_at.type)))


@dataclass(frozen=True)
class Page:
    items: list[dict]
    next_cursor: str | None


def _encode_cursor(number: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": number}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The agreement number a cursor points after; raises ValueError when malformed."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        after = data["after"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError("malformed cursor") from error
    if not isinstance(after, str):
        raise ValueError("malformed cursor")
    return after


def page(session: Session, identity_id: str, client, *, q: str | None = None, product: str | None = None,
         cursor: str | None = None, limit: int = 50) -> Page:
    """A stable page of the caller's agreements, ordered by number (which never
    changes, unlike last use, so cursors stay valid while the person works)."""
    limit = max(1, min(limit, MAX_PAGE))
    query = eligible(identity_id, client)
    if (q or "").strip():
        # Matches first, then the order, as in chooser_list: left to itself, PostgreSQL read "the first 51 by
        # number that match 1005" as a walk through every agreement in number order (33 ms with 100,000
        # agreements, growing with the table; bench/README.md).
        matching = _search(_eligible_ids(identity_id, client), q).cte("matching").prefix_with("MATERIALIZED")
        query = query.where(Membership.id.in_(select(matching.c.id)))
    if product:
        query = query.where(Agreement.product_id == product)
    if cursor:
        query = query.where(Agreement.number > decode_cursor(cursor))
    rows = session.execute(query.order_by(Agreement.number).limit(limit + 1)).scalars().all()
    items = [{**_selected(m).claims(), "last_used_at": m.last_used_at.isoformat() if m.last_used_at else None}
             for m in rows[:limit]]
    next_cursor = _encode_cursor(rows[limit - 1].agreement.number) if len(rows) > limit else None
    return Page(items, next_cursor)
