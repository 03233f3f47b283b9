"""``idp legacy import FILE.csv``: created, updated, unchanged and rejected rows, idempotent."""

from __future__ import annotations

import csv

from sqlalchemy import select

from idp.agreements.models import Agreement
from idp.audit.models import AuditEvent
from idp.legacy_users.models import LegacyUser
from tests.helpers.factories import unique
from tests.legacy.conftest import LEGACY_PASSWORD, fresh, legacy_hash, prove

HEADER = ["agreement_number", "agreement_name", "product", "username", "email", "role", "legacy_hash"]


def write_csv(path, rows, header=HEADER):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def run(app, *args):
    return app.test_cli_runner().invoke(args=["legacy", "import", *args])


def test_import_reports_each_row_and_is_idempotent(app, world, db, tmp_path):
    product = world.product.id
    a, b = unique("")[-12:], unique("")[-12:]
    good = legacy_hash()
    rows = [
        [a, "Skovbo Tømrer ApS", product, "kim", "kim@example.com", "superuser", good],          # 2 created
        [a, "Skovbo Tømrer ApS", product, "Bo", "", "time-registrant", legacy_hash(scheme="md5_crypt")],  # 3
        [b, "Hansen Revision", product, "anna", "office@example.com", "user", legacy_hash(scheme="pbkdf2_sha256")],  # 4
        [b, "Hansen Revision", "no-such-product", "carl", "", "user", good],                       # 5 rejected
        [b, "Hansen Revision", product, "dora", "", "user", "$6$rounds=1000$truncated"],          # 6 rejected
        [b, "Hansen Revision", product, "erik", "", "user", "plaintext-password"],                # 7 rejected
        [b, "Hansen Revision", product, "fie", "", "owner", good],                                # 8 rejected
        [b, "Hansen Revision", product, "ANNA", "", "user", good],                                # 9 duplicate
        [b, "Hansen Revision", product, "gry", "not-an-address", "user", good],                   # 10 rejected
        ["", "", product, "x", "", "user", good],                                                 # 11 rejected
    ]
    path = write_csv(tmp_path / "legacy.csv", rows)

    result = run(app, path)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "created 3, updated 0, unchanged 0, rejected 7; agreements created 2"
    assert "row 5: rejected: unknown product 'no-such-product'" in lines
    assert any(line.startswith("row 6: rejected: malformed sha512_crypt hash") for line in lines)
    assert "row 7: rejected: unrecognised hash format" in lines
    assert any(line.startswith("row 8: rejected: unknown role 'owner'") for line in lines)
    assert "row 9: rejected: duplicate of row 4" in lines
    assert "row 10: rejected: not an e-mail address: 'not-an-address'" in lines
    assert any(line.startswith("row 11: rejected: agreement number missing") for line in lines)

    imported = fresh(db, Agreement, number=a)[0]
    assert imported.name == "Skovbo Tømrer ApS" and imported.product_id == product
    users = {u.username: u for u in fresh(db, LegacyUser, agreement_id=imported.id)}
    assert users["kim"].role == "superuser" and users["kim"].email == "kim@example.com"
    assert users["Bo"].role == "time_registrant" and users["Bo"].email is None

    # Again: nothing changes.
    again = run(app, path)
    assert again.output.splitlines()[0] == "created 0, updated 0, unchanged 3, rejected 7; agreements created 0"

    # A changed row updates; an activated legacy user is never brought back.
    kim = users["kim"]
    kim.activated_at, kim.password_hash = kim.created_at, None
    db.commit()
    rows[1][5] = "user"
    rows[2][6] = legacy_hash("a new old password")
    path = write_csv(tmp_path / "legacy.csv", rows)
    third = run(app, path)
    assert third.output.splitlines()[0] == "created 0, updated 2, unchanged 0, rejected 8; agreements created 0"
    assert "row 2: rejected: already moved to the new login; left as it is" in third.output
    assert fresh(db, LegacyUser, id=kim.id)[0].password_hash is None
    assert fresh(db, LegacyUser, agreement_id=imported.id, username="Bo")[0].role == "user"

    events = db.execute(select(AuditEvent).where(AuditEvent.event == "legacy_user.imported")
                        .order_by(AuditEvent.id.desc())).scalars().first()
    assert events.actor == "operator" and events.details["updated"] == 2


def test_agreement_of_another_product_and_stored_emails_win(app, world, factory, db, tmp_path):
    other_product = factory.product()
    agreement = world.agreement()
    legacy = world.legacy(agreement, "kim", email="own@example.com")
    path = write_csv(tmp_path / "legacy.csv", [
        [agreement.number, agreement.name, other_product.id, "x", "", "user", legacy_hash()],
        [agreement.number, agreement.name, world.product.id, "kim", "shared@example.com", "user",
         legacy.password_hash],
    ])
    result = run(app, path)
    assert f"row 2: rejected: agreement {agreement.number} belongs to product '{world.product.id}'" in result.output
    assert result.output.startswith("created 0, updated 0, unchanged 1, rejected 1")
    assert fresh(db, LegacyUser, id=legacy.id)[0].email == "own@example.com"


def test_dry_run_writes_nothing(app, world, db, tmp_path):
    number = unique("")[-12:]
    path = write_csv(tmp_path / "legacy.csv", [[number, "Dry", world.product.id, "kim", "", "user", legacy_hash()]])
    result = run(app, "--dry-run", path)
    assert result.output.startswith("would have created 1"), result.output
    assert fresh(db, Agreement, number=number) == []


def test_missing_columns_are_an_error(app, tmp_path):
    path = write_csv(tmp_path / "legacy.csv", [["1", "x"]], header=["agreement_number", "username"])
    result = run(app, path)
    assert result.exit_code != 0 and "the header lacks" in result.output


def test_imported_credentials_work(app, world, db, tmp_path, browser):
    number = unique("")[-12:]
    path = write_csv(tmp_path / "legacy.csv", [[number, "Works", world.product.id, "kim", "", "user",
                                                legacy_hash(LEGACY_PASSWORD, "argon2")]])
    assert run(app, path).exit_code == 0
    assert prove(browser(), fresh(db, Agreement, number=number)[0], "kim").status_code == 302
