"""Which entries of pg_dump's table of contents go to the target, and why, by the catalog's facts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from supamove.errors import ConfigError, SupamoveError
from supamove.schema.facts import Facts
from supamove.schema.model import (
    API_ROLES,
    SESSION_ENTRIES,
    SHIM_FUNCTIONS,
    Decision,
    Extension,
    ReportItem,
    SchemaOptions,
    SecurityDefiner,
    TocEntry,
    path_text,
)

PG_CLASS = 1259
PG_PROC = 1255
PG_POLICY = 3256
NOT_MOVED = {
    "PUBLICATION": "logical replication for Realtime: not moved",
    "PUBLICATION TABLE": "part of a Realtime publication: not moved",
    "PUBLICATION TABLES IN SCHEMA": "part of a Realtime publication: not moved",
    "EVENT TRIGGER": "a Supabase service hook: not moved",
    "SUBSCRIPTION": "logical replication: not moved",
}
BUILT_IN = {"plpgsql"}  # in every database
TABLE_FIX = "change the column's type or default on the source, or leave the table out with --exclude-tables"
MATVIEW_NOTE = "created empty: `supamove import` refreshes it once every table is loaded"


@dataclass(frozen=True)
class Context:
    facts: Facts
    options: SchemaOptions
    by_id: dict[int, TocEntry]


Verdict = tuple[Decision, str] | None


def select_entries(entries: list[TocEntry], facts: Facts, options: SchemaOptions) -> list[Extension]:
    """Decide every entry (kept, changed or left out, with the reason); the extensions the kept ones use."""
    ctx = Context(facts, options, {e.dump_id: e for e in entries})
    used: set[str] = set()
    for entry in entries:
        decide(entry, ctx)
        _note_security_definer(entry, ctx)
        if entry.decision != "left-out":
            used |= {r.extension for r in facts.refs.get(entry.key, ()) if r.extension} - BUILT_IN
    return [Extension(name, *facts.extensions[name]) for name in sorted(used)]


def decide(entry: TocEntry, ctx: Context) -> None:
    if entry.type in SESSION_ENTRIES:
        return
    if entry.type == "SCHEMA":
        entry.decide("changed", "created with CREATE SCHEMA IF NOT EXISTS (the target may have it already)")
        return
    gone = next((ctx.by_id[d] for d in entry.depends_on
                 if d in ctx.by_id and ctx.by_id[d].decision == "left-out"), None)
    if gone is not None:
        if entry.type == "TABLE" and _not_selected(entry, ctx) is None:  # the export would read it all the same
            raise SupamoveError(f"table {entry.schema}.{entry.name} depends on {gone.label}, left out ({gone.reason}), "
                                "so it cannot be created on the target", fix=TABLE_FIX)
        entry.decide("left-out", f"depends on {gone.label}, left out")
        return
    for rule in RULES:
        verdict = rule(entry, ctx)
        if verdict is not None:
            entry.decide(*verdict)
            return
    if entry.type == "MATERIALIZED VIEW":
        entry.decide("kept", MATVIEW_NOTE)
    extensions = sorted({r.extension for r in ctx.facts.refs.get(entry.key, ()) if r.extension} - BUILT_IN)
    if extensions:
        entry.decide("kept", _join(entry.reason, f"uses extension {', '.join(extensions)}"))


def _note_security_definer(entry: TocEntry, ctx: Context) -> None:
    """pg_restore --no-owner: a SECURITY DEFINER function belongs to whoever applies schema.sql, and runs with
    that user's rights for every role that may call it (a superuser's, when one applies it)."""
    found = ctx.facts.security_definers.get(entry.objid) if entry.classid == PG_PROC else None
    if found is None or entry.decision == "left-out":
        return
    definer, superuser = found
    entry.decide(entry.decision, _join(entry.reason, (
        f"SECURITY DEFINER: runs with its owner's rights, {definer.source_owner}'s on the source "
        f"({'a superuser' if superuser else 'not a superuser'}), on the target those of the user applying "
        "schema.sql: give it a non-superuser owner there (`schema --apply` names it)")))


def kept_security_definers(entries: list[TocEntry], facts: Facts) -> list[SecurityDefiner]:
    """The SECURITY DEFINER functions schema.sql creates."""
    return [facts.security_definers[e.objid][0] for e in entries
            if e.classid == PG_PROC and e.objid in facts.security_definers and e.decision != "left-out"]


def _not_moved(entry: TocEntry, ctx: Context) -> Verdict:
    return ("left-out", NOT_MOVED[entry.type]) if entry.type in NOT_MOVED else None


def _not_selected(entry: TocEntry, ctx: Context) -> Verdict:
    """Tables outside --tables/--exclude-tables; a partition goes with its partitioned table."""
    if entry.type != "TABLE":
        return None
    key = ctx.facts.partition_roots.get(entry.objid, (entry.schema, entry.name))
    if key in ctx.facts.selected_tables:
        return None
    return ("left-out", "not selected (--tables, --exclude-tables)")


def _uses_unread(entry: TocEntry, ctx: Context) -> Verdict:
    """A foreign key to, or a view of, a table left out that pg_dump did not read (the user may not)."""
    table = ctx.facts.unread_refs.get(entry.key)
    if table is None:
        return None
    what = "references" if entry.type == "FK CONSTRAINT" else "uses"
    return ("left-out", f"{what} TABLE {table}, left out (not selected; the source's user may not read it)")


def _grants(entry: TocEntry, ctx: Context) -> Verdict:
    """GRANTs: Supabase's API roles only with --keep-roles; other roles the operator grants by hand."""
    if entry.type != "ACL":
        return None
    about = [ctx.by_id[d] for d in entry.depends_on if d in ctx.by_id]
    granted = next((ctx.facts.grantees[o.key] for o in about if o.key in ctx.facts.grantees), [])
    roles = [g for g in granted if g != "PUBLIC"]
    supabase = [r for r in roles if r in API_ROLES]
    others = [r for r in roles if r not in API_ROLES]
    if others:
        why = (f"grants to {', '.join(roles)}: {', '.join(others)} "
               f"{'is a role' if len(others) == 1 else 'are roles'} of the source; grant on the target by hand")
    elif supabase and not ctx.options.keep_roles:
        why = f"grants to {', '.join(supabase)}, Supabase's API roles (--keep-roles keeps them)"
    else:
        return ("kept", f"grants to {', '.join(supabase)} (created NOLOGIN by --keep-roles)") if supabase else None
    return _left_out_grants(entry, about, ctx, why)


def _left_out_grants(entry: TocEntry, about: list[TocEntry], ctx: Context, why: str) -> Verdict:
    """Grants left out; a REVOKE ... FROM PUBLIC among them stays: without it every role could call the function
    (a SECURITY DEFINER one, an auth hook) that the source kept from them."""
    if not any(o.key in ctx.facts.public_revoked for o in about):
        return ("left-out", why)
    entry.only_revokes = True
    return ("changed", f"{why}; kept: its REVOKE ... FROM PUBLIC, so that not every role may use it, as on the source")


def _serves_platform_triggers(entry: TocEntry, ctx: Context) -> Verdict:
    """The handle_new_user pattern: a function that only triggers on auth.users call."""
    served = ctx.facts.auth_trigger_functions.get(entry.objid) if entry.classid == PG_PROC else None
    if not served:
        return None
    return ("left-out", f"only serves {', '.join(served)}, which is left out")


def _body_names_platform(entry: TocEntry, ctx: Context) -> Verdict:
    """A function whose body names auth.users or the like: kept (the application may not call it), said."""
    named = ctx.facts.platform_bodies.get(entry.objid) if entry.classid == PG_PROC else None
    if not named:
        return None
    return ("kept", f"its body names {', '.join(named)}, part of Supabase's platform, not on the target: a call "
                    "fails there until it is rewritten")


def _policy_roles(entry: TocEntry, ctx: Context) -> Verdict:
    """A policy for roles the target lacks: Supabase's API roles without --keep-roles, or other roles of the source."""
    if entry.classid != PG_POLICY:
        return None
    roles = [r for r in ctx.facts.policy_roles.get(entry.objid, []) if r != "PUBLIC"]
    others = [r for r in roles if r not in API_ROLES]
    if others:
        return ("left-out", f"applies to {', '.join(roles)}: {', '.join(others)} "
                            f"{'is a role' if len(others) == 1 else 'are roles'} of the source; create "
                            f"{'it' if len(others) == 1 else 'them'} on the target, then the policy, by hand")
    if not roles or ctx.options.keep_roles:
        return None
    return ("left-out", f"applies to {', '.join(roles)}, Supabase's API "
                        + ("role (--keep-roles creates it)" if len(roles) == 1 else "roles (--keep-roles creates them)"))


def _default_privileges(entry: TocEntry, ctx: Context) -> Verdict:
    """ALTER DEFAULT PRIVILEGES: Supabase sets them for its own roles (supabase_admin, postgres) in public."""
    if entry.type != "DEFAULT ACL":
        return None
    return ("left-out", "default privileges of the source's roles for objects created later: set your own on "
                        "the target if you want them")


def _platform_refs(entry: TocEntry, ctx: Context) -> Verdict:
    """An object using Supabase's platform: auth.uid() and kin through the shim, anything else left out."""
    refs = [r for r in ctx.facts.refs.get(entry.key, ()) if r.extension is None]
    if not refs:
        return None
    options = ctx.options
    shimmed = sorted(r.identity for r in refs if r.identity in SHIM_FUNCTIONS)
    # An index is named only when nothing else is: a foreign key to auth.users uses auth.users_pkey too.
    platform = sorted(r.identity for r in refs if r.identity not in SHIM_FUNCTIONS and r.kind != "index") \
        or sorted(r.identity for r in refs if r.identity not in SHIM_FUNCTIONS)
    if entry.type == "TABLE" and (platform or not options.auth_shim):
        raise _table_needs_platform(entry, platform or shimmed, options)
    if platform:
        what = "references" if entry.type == "FK CONSTRAINT" else "uses"
        return ("left-out", f"{what} {', '.join(platform)}, part of Supabase's platform, not on the target")
    if not options.auth_shim:
        return ("left-out", f"calls {', '.join(shimmed)} (--no-auth-shim)")
    return ("changed", f"calls {', '.join(shimmed)}: provided by the target's auth compatibility schema")


def _table_needs_platform(entry: TocEntry, uses: list[str], options: SchemaOptions) -> SupamoveError:
    message = f"table {entry.schema}.{entry.name} uses {', '.join(uses)} (Supabase's platform), so it cannot be " \
              "created on the target"
    if uses and set(uses) <= SHIM_FUNCTIONS and not options.auth_shim:  # an option in the way: exit 2
        return ConfigError(message + " without the auth compatibility schema", fix="drop --no-auth-shim")
    return SupamoveError(message, fix=TABLE_FIX)


def _join(first: str, second: str) -> str:
    return f"{first}; {second}" if first else second


# PostgreSQL's default search_path (nothing to set), and the schemas every database has.
DEFAULT_PATH = ["$user", "public"]
IN_EVERY_DATABASE = {"$user", "public", "pg_catalog", "pg_temp"}


def search_path_setting(path: list[str], target_schemas: set[str]) -> tuple[list[str], ReportItem | None]:
    """The search_path schema.sql sets on the target's database: the one the source's sessions have (Supabase's
    holds `extensions`), so that the functions and queries calling an extension's function by name alone
    (uuid_generate_v4(), which pg_dump writes as it is in a body) find it there too; less the schemas the target
    will not have. Nothing when the source has PostgreSQL's default."""
    if not path or path == DEFAULT_PATH:
        return [], None
    kept = [s for s in path if s in IN_EVERY_DATABASE | target_schemas]
    dropped = [s for s in path if s not in kept]
    less = f"less {', '.join(dropped)}, which the target will not have" if dropped else ""
    if not kept or kept == DEFAULT_PATH:
        return [], ReportItem("DATABASE SETTING", "-", "search_path", "left-out",
                              f"the source's sessions search {path_text(path)}; {less}: the default is kept")
    reason = (f"set on the target's database (ALTER DATABASE) as the source's sessions have it, {path_text(kept)}: "
              "the application's functions and queries may call an extension's function by name alone "
              "(uuid_generate_v4())")
    return kept, ReportItem("DATABASE SETTING", "-", "search_path", "changed" if dropped else "kept",
                            _join(reason, less))


RULES: tuple[Callable[[TocEntry, Context], Verdict], ...] = (
    _not_moved, _not_selected, _uses_unread, _grants, _default_privileges, _serves_platform_triggers, _policy_roles,
    _platform_refs, _body_names_platform)
