"""Dependency order, cycles and user-id columns, on the catalog's own data structures and a real server."""

from __future__ import annotations

import psycopg
import pytest

from supamove import catalog
from supamove.catalog import Column, ForeignKey, Table
from supamove.errors import ConfigError

UUID = (Column("id", "uuid"),)


def table(name: str, *refs: tuple[str, str]) -> Table:
    fks = tuple(ForeignKey(f"{name}_{i}", ("ref",), schema, ref, ("id",)) for i, (schema, ref) in enumerate(refs))
    return Table("public", name, UUID + (Column("ref", "uuid"),), ("id",), fks)


def names(groups: list[list[Table]]) -> list[list[str]]:
    return [[t.name for t in g] for g in groups]


def test_parents_load_first() -> None:
    tables = [table("c", ("public", "b")), table("b", ("public", "a")), table("a")]
    assert names(catalog.load_order(tables)) == [["a"], ["b"], ["c"]]


def test_cycles_and_self_references_share_a_group() -> None:
    tables = [table("x", ("public", "y")), table("y", ("public", "x")), table("tree", ("public", "tree")),
              table("leaf", ("public", "x"))]
    groups = catalog.load_order(tables)
    assert names(groups).index(["x", "y"]) < names(groups).index(["leaf"])
    assert sorted(names(catalog.cycles(groups))) == [["tree"], ["x", "y"]]
    assert ["leaf"] not in names(catalog.cycles(groups))


def test_long_chain_does_not_recurse() -> None:
    tables = [table("t0")] + [table(f"t{i}", ("public", f"t{i - 1}")) for i in range(1, 3000)]
    order = [g[0].name for g in catalog.load_order(tables)]
    assert order == [f"t{i}" for i in range(3000)]


def test_user_ids_follow_foreign_keys() -> None:
    profiles = table("profiles", ("auth", "users"))
    members = Table("public", "members", (Column("org", "uuid"), Column("user_id", "uuid")), (),
                    (ForeignKey("m_fk", ("user_id",), "public", "profiles", ("ref",)),))
    found = catalog.find_user_id_columns([profiles, members])
    assert found[0].user_id_columns == ("ref",)
    assert found[1].user_id_columns == ("user_id",)


def test_named_user_id_column_must_exist() -> None:
    with pytest.raises(ConfigError, match="no such exported column"):
        catalog.find_user_id_columns([table("a")], ["public.a.nope"])


def test_a_named_user_id_column_must_hold_user_ids_as_its_values() -> None:
    """The import swaps a named column's values whole: a JSON document or a composite was taken for one id,
    reported as unmapped, and --unmapped-users null emptied it."""
    docs = Table("public", "docs", (Column("body", "jsonb"), Column("place", "public.place"),
                                    Column("tag", "public.tag_text", base_type="text"), Column("refs", "text[]"),
                                    Column("owner_key", "text", generated=True)))
    for name, kind in (("body", "type jsonb"), ("place", "type public.place"), ("owner_key", "generated type text")):
        with pytest.raises(ConfigError) as caught:
            catalog.find_user_id_columns([docs], [f"public.docs.{name}"])
        assert str(caught.value).startswith(f"--user-id-column public.docs.{name}: its values are not user ids "
                                            f"({kind}) (fix: name a uuid, text-like or uuid[]/text[] column;")
    arrays = Table("public", "arrays", (Column("cia", "extensions.citext[]", base_type="extensions.citext[]"),
                                        Column("ca", "character(36)[]", base_type="character[]"),
                                        Column("ua", "public.uuids", base_type="uuid[]")))
    found = catalog.find_user_id_columns([docs, arrays], ["public.docs.tag", "public.docs.refs", "public.arrays.cia",
                                                          "public.arrays.ca", "public.arrays.ua"])
    assert [t.user_id_columns for t in found] == [("tag", "refs"), ("cia", "ca", "ua")]


def test_table_patterns_take_quoted_parts_as_user_id_column_does() -> None:
    # '"Odd Schema"."My.Table"' and '"My.Table"' matched nothing, while --user-id-column takes that form.
    odd, plain = Table("Odd Schema", "My.Table", ()), Table("public", "readings", ())
    for pattern in ('"Odd Schema"."My.Table"', '"My.Table"', 'Odd Schema."My.Table"', '"Odd Schema".*',
                    'Odd Schema.My.Table'):
        assert catalog.selected(odd, [pattern]) and not catalog.selected(plain, [pattern]), pattern
    for pattern in ("public.read*", "readings", "*.readings", "public.*"):
        assert catalog.selected(plain, [pattern]) and not catalog.selected(odd, [pattern]), pattern
    assert not catalog.selected(odd, ["*"], ['"My.Table"'])


def test_platform_schemas_refused() -> None:
    for schema in ("auth", "storage", "vault", "supabase_migrations", "_realtime", "pgsodium_masks"):
        with pytest.raises(ConfigError, match="platform schema"):
            catalog.schemas_to_read([schema])


def test_real_catalog(dbs) -> None:
    with psycopg.connect(dbs.source_admin_url) as conn:
        tables = {t.qualified: t for t in catalog.read_tables(conn, ["public", "edge"])}
    assert tables["edge.events"].partitioned
    assert not any(name.startswith("edge.events_") for name in tables)  # partitions come through the parent
    zoo = tables["edge.types_zoo"]
    assert any(c.generated for t in tables.values() for c in t.columns)
    assert any(c.identity == "always" for t in tables.values() for c in t.columns)
    assert zoo.primary_key
    assert tables["edge.no_pk"].primary_key == ()
    assert "acknowledged_by" in tables["public.alerts"].user_id_columns


def test_a_column_option_names_parts_holding_dots_in_double_quotes() -> None:
    # The export's own fix for a table "a.b"."m.x" named its column so, and the parser refused it.
    assert catalog.parse_column_ref('"a.b"."m.x".ref') == ("a.b", "m.x", "ref")
    assert catalog.parse_column_ref('public."say ""hi""".c') == ("public", 'say "hi"', "c")
    assert catalog.parse_column_ref("public.orders.created_by") == ("public", "orders", "created_by")
    assert catalog.qualify("a.b", "m.x", "ref") == '"a.b"."m.x".ref'
    for wrong in ("a.b.c.d", "public.orders", '"a.b.c', "a..c", "a.b.c."):
        with pytest.raises(ConfigError, match="is not schema.table.column"):
            catalog.parse_column_ref(wrong)
