"""export leaves nothing behind: user ids found by their values, every sequence, every application schema."""

from __future__ import annotations

from pathlib import Path

import orjson
import psycopg
import pytest
from conftest import write_mapping
from psycopg import sql

from supamove import catalog, userids
from supamove.catalog import Column, ForeignKey, Table
from supamove.db import Endpoint
from supamove.errors import ConfigError
from supamove.importer import ImportOptions, run_import
from supamove.paths import DataDir

EDGE = ("--schema", "public", "--schema", "edge")
PAYER = "billing.payments.payer_ref"
BILLING_LEFT_OUT = ("warning: schema billing (2 tables, with foreign keys to auth.users) is not exported: "
                    "add --schema billing, or --schema all for every application schema")
FOUND = [
    "edge.posts.author_id: user ids found by value, 6 of 6 values are user ids (remapped by the import)",
    "edge.posts.editor: user ids found by value, 3 of 3 values are user ids (remapped by the import)",
    "edge.user_refs.watcher_ids: user ids found by value, 4 of 4 values are user ids (remapped by the import)",
]
JSON_NOTE = ("edge.posts.meta: user ids found inside JSON under the keys owner (6), review.by (6) "
             "(the import rewrites each string in it that is a user id)")
MIXED = ("Error: 1 column holds both Supabase user ids and other values: billing.payments.payer_ref "
         "(3 of 5 values are user ids) (fix: decide for each: --user-id-column billing.payments.payer_ref "
         "remaps its user ids (the import then needs --unmapped-users keep for the other values), "
         "--not-user-id-column billing.payments.payer_ref keeps every value as it is)")


def output_lines(output: str) -> list[str]:
    return [line.rstrip() for line in output.splitlines()]


def metadata(data_dir: Path) -> dict:
    return orjson.loads((data_dir / "metadata.json").read_bytes())


def table(meta: dict, qualified: str) -> dict:
    return next(t for t in meta["tables"] if f"{t['schema']}.{t['name']}" == qualified)


def test_dry_run_lists_what_it_found_and_what_it_leaves_out(cli, data_dir: Path) -> None:
    result = cli("export", "--dry-run", *EDGE)
    assert result.exit_code == 0, result.output
    lines = output_lines(result.output)
    for line in FOUND + [JSON_NOTE, BILLING_LEFT_OUT]:
        assert line in lines, line
    assert not any("schema public" in line or "schema edge " in line for line in lines)
    assert lines[-1] == "Dry run: nothing was written."
    assert not data_dir.exists()


def test_export_records_how_user_ids_and_sequences_were_found(cli, exported: Path) -> None:
    meta = metadata(exported)
    assert table(meta, "edge.posts")["userIdColumns"] == ["author_id", "editor"]
    assert table(meta, "edge.posts")["userIdFoundBy"] == {"author_id": "values", "editor": "values"}
    assert table(meta, "edge.user_refs")["userIdFoundBy"] == {"user_id": "foreign key", "watcher_ids": "values"}
    assert table(meta, "public.alert_subscriptions")["userIdFoundBy"] == {"notify_user_ids": "name"}
    assert {"schema": "edge", "table": "posts", "column": "meta", "key": "review.by", "userIds": 6} in \
        meta["userIdValueCheck"]["jsonKeys"]
    states = {(s["schema"], s["name"]): (s["lastValue"], s["isCalled"]) for s in meta["sequences"]}
    assert states[("edge", "post_number_seq")] == (6000, True)  # named by a default, owned by no column
    assert states[("edge", "ticket_seq")] == (42, True)  # used by no column at all
    assert meta["unexportedSchemas"] == [{"name": "billing", "tables": 2, "userIds": True}]


def test_summary_repeats_the_findings(cli, data_dir: Path) -> None:
    result = cli("export", *EDGE)
    assert result.exit_code == 0, result.output
    lines = output_lines(result.output)
    for line in FOUND + [JSON_NOTE, BILLING_LEFT_OUT]:
        assert line in lines, line


def test_mixed_column_stops_the_export_until_decided(cli, data_dir: Path) -> None:
    dry = cli("export", "--dry-run", "--schema", "billing")
    assert dry.exit_code == 2
    lines = output_lines(dry.output)
    assert "billing.payments.payer_ref: 3 of 5 values are user ids, 2 are not" in lines
    assert lines[-1] == MIXED
    stopped = cli("export", "--schema", "billing")
    assert stopped.exit_code == 2
    assert output_lines(stopped.output)[-1] == MIXED
    assert metadata(data_dir)["finishedAt"] is None
    kept = cli("export", "--schema", "billing", "--not-user-id-column", PAYER)
    assert kept.exit_code == 0, kept.output
    assert table(metadata(data_dir), "billing.payments")["userIdColumns"] == []
    remapped = cli("export", "--force", "--schema", "billing", "--user-id-column", PAYER)
    assert remapped.exit_code == 0, remapped.output
    payments = table(metadata(data_dir), "billing.payments")
    assert payments["userIdColumns"] == ["payer_ref"] and payments["userIdFoundBy"] == {"payer_ref": "option"}
    both = cli("export", "--force", "--schema", "billing", "--user-id-column", PAYER, "--not-user-id-column", PAYER)
    assert both.exit_code == 2
    assert output_lines(both.output)[-1] == (
        "Error: billing.payments.payer_ref is named by both --user-id-column and --not-user-id-column "
        "(fix: keep only one of the two for it)")
    fk = cli("export", "--force", "--schema", "billing", "--not-user-id-column", "billing.invoices.customer_id")
    assert fk.exit_code == 2
    assert "--not-user-id-column billing.invoices.customer_id: its foreign key shows it holds user ids" in fk.output


def test_schema_all_exports_every_application_schema(cli, data_dir: Path) -> None:
    result = cli("export", "--schema", "all", "--not-user-id-column", PAYER)
    assert result.exit_code == 0, result.output
    assert "is not exported" not in result.output
    meta = metadata(data_dir)
    assert meta["schemas"] == ["billing", "edge", "public"]
    assert {t["schema"] for t in meta["tables"]} == {"billing", "edge", "public"}
    assert meta["unexportedSchemas"] == []
    assert any((s["schema"], s["name"], s["lastValue"]) == ("billing", "invoice_number_seq", 6000)
               for s in meta["sequences"])


def test_import_remaps_value_found_columns_and_continues_every_sequence(dbs, exported: Path) -> None:
    mapping = write_mapping(dbs, exported)
    run_import(Endpoint(dbs.target_url, "target"), DataDir(exported), ImportOptions())
    with dbs.source() as conn:
        supabase = {r[0] for r in conn.execute("SELECT id::text FROM auth.users")}
    with dbs.target() as conn:
        values = [v for (v,) in conn.execute("SELECT author_id::text FROM edge.posts UNION ALL "
                                             "SELECT editor FROM edge.posts UNION ALL "
                                             "SELECT unnest(watcher_ids)::text FROM edge.user_refs") if v]
        assert len(values) == 6 + 3 + 4
        assert not set(values) & supabase
        assert set(values) <= set(mapping.values())
        for name, after in (("post_number_seq", 6000), ("ticket_seq", 42)):
            value = conn.execute(sql.SQL("SELECT nextval({})").format(sql.Literal(f"edge.{name}"))).fetchone()[0]
            assert value > after, name
        assert conn.execute("INSERT INTO edge.posts (id) VALUES (100) RETURNING number").fetchone()[0] > 6000


def test_sequence_never_moves_back(dbs, exported: Path) -> None:
    with psycopg.connect(dbs.target_url, autocommit=True) as conn:
        conn.execute("SELECT setval('edge.ticket_seq', 9000)")  # the target already went further
    write_mapping(dbs, exported)
    run_import(Endpoint(dbs.target_url, "target"), DataDir(exported), ImportOptions())
    with dbs.target() as conn:
        assert conn.execute("SELECT nextval('edge.ticket_seq')").fetchone()[0] == 9001


def test_how_each_user_id_column_was_found() -> None:
    profiles = Table("public", "profiles", (Column("id", "uuid"), Column("watcher_user_ids", "uuid[]")), ("id",),
                     (ForeignKey("profiles_id_fkey", ("id",), "auth", "users", ("id",)),))
    posts = Table("public", "posts", (Column("author", "uuid"), Column("editor", "text"),
                                      Column("member_user_ids", "uuid[]")), (),
                  (ForeignKey("posts_author_fkey", ("author",), "public", "profiles", ("id",)),))
    found = catalog.find_user_id_columns([profiles, posts], ["public.posts.editor"], ["public.posts.member_user_ids"])
    assert dict(found[0].user_id_found_by) == {"id": "foreign key", "watcher_user_ids": "name"}
    assert dict(found[1].user_id_found_by) == {"author": "foreign key", "editor": "option"}
    assert found[1].user_id_columns == ("author", "editor")
    with pytest.raises(ConfigError, match="its foreign key shows it holds user ids"):
        catalog.find_user_id_columns([profiles, posts], (), ["public.posts.author"])
    with pytest.raises(ConfigError, match="--not-user-id-column 'posts.x' is not schema.table.column"):
        catalog.find_user_id_columns([profiles, posts], (), ["posts.x"])


# Foreign keys that point at user ids without naming auth.users, and one never checked (NOT VALID).
KEYED_SQL = """
CREATE TABLE edge.members (id uuid PRIMARY KEY);
INSERT INTO edge.members SELECT id FROM auth.users ORDER BY id LIMIT 4;
CREATE TABLE edge.member_notes (id bigint PRIMARY KEY, member uuid REFERENCES edge.members(id));
INSERT INTO edge.member_notes SELECT row_number() OVER (ORDER BY id), id FROM edge.members;
CREATE TABLE edge.stale_refs (id bigint PRIMARY KEY, sensor_id uuid);
INSERT INTO edge.stale_refs SELECT row_number() OVER (ORDER BY id), id FROM edge.members;
ALTER TABLE edge.stale_refs ADD FOREIGN KEY (sensor_id) REFERENCES public.sensors(id) NOT VALID;
CREATE SCHEMA side;
CREATE TABLE side.keys (id uuid PRIMARY KEY);
INSERT INTO side.keys SELECT id FROM edge.members;
CREATE TABLE edge.side_refs (id bigint PRIMARY KEY, key uuid REFERENCES side.keys(id));
INSERT INTO edge.side_refs SELECT row_number() OVER (ORDER BY id), id FROM side.keys;
GRANT USAGE ON SCHEMA side TO supabase_app;
GRANT SELECT ON ALL TABLES IN SCHEMA edge, side TO supabase_app;
"""


def test_foreign_key_proves_a_column_holds_no_user_ids_only_into_a_checked_key_without_any(
        cli, dbs, env, data_dir: Path) -> None:
    with dbs.source() as conn:
        conn.execute(KEYED_SQL)
    result = cli("export", "--dry-run", *EDGE)
    assert result.exit_code == 0, result.output
    lines = output_lines(result.output)
    for column in ("members.id", "member_notes.member", "stale_refs.sensor_id", "side_refs.key"):
        assert f"edge.{column}: user ids found by value, 4 of 4 values are user ids (remapped by the import)" \
            in lines, column
    for line in FOUND + [JSON_NOTE]:
        assert line in lines, line
    log = Path(env["LOG_FILE_PATH"]).read_text()
    assert "public.readings.sensor_id: no user ids: every value is a key of public.sensors(id), which holds none" \
        in log
    assert "public.sensors.unit_id: no user ids: every value is a key of public.units(id), which holds none" in log
    assert not any(f"edge.{c}: no user ids" in log for c in ("member_notes", "stale_refs", "side_refs"))


def test_only_a_validated_single_column_foreign_key_between_uuid_columns_proves_anything() -> None:
    none = {("public", "sensors", "id"), ("public", "sensors", "code")}
    fks = (ForeignKey("a", ("a",), "public", "sensors", ("id",), validated=True),
           ForeignKey("b", ("b",), "public", "sensors", ("id",), validated=False),
           ForeignKey("c", ("c", "d"), "public", "sensors", ("id", "code"), validated=True),
           ForeignKey("e", ("e",), "public", "sensors", ("code",), validated=True),
           ForeignKey("f", ("f",), "public", "units", ("id",), validated=True))
    table = Table("public", "t", tuple(Column(n, "text" if n == "e" else "uuid") for n in "abcdef"),
                  foreign_keys=fks)
    assert userids.keyed_without_user_ids(table, none) == {"a": ("public", "sensors", "id")}


def test_probing_each_value_counts_what_the_hash_of_user_ids_counts(dbs) -> None:
    with dbs.source() as conn:
        tables = catalog.read_relations(conn, ["public", "edge", "billing"])
        counted = [(userids.count_table(conn, t, [c for c in t.columns if userids.family(c)], False),
                    userids.count_table(conn, t, [c for c in t.columns if userids.family(c)], True)) for t in tables]
        few = userids.tables_of_few_rows(conn, tables, 40)
    assert all(hashed == probed for hashed, probed in counted)
    assert sum(c.user_ids for hashed, _ in counted for c in hashed.columns) > 100
    assert ("edge", "posts") in few and ("public", "readings") not in few
