"""Benchmark: supamove against pg_dump/pg_restore, pgcopydb and a raw COPY pipe, on the same servers and data.

Run from a clone (after `pip install -e .`):  python bench/run.py [--rows 1M|4M] [--runs 3]
pgcopydb is measured when it is installed (Debian/Ubuntu: `apt-get install pgcopydb`).
Prints a table of seconds, rows/s, MB/s and peak RSS (median of --runs), and the ratios.
Not part of the test suite: the machine is noisy, so speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson
import psycopg
from psycopg import sql

import supamove
from supamove.sandbox import fixtures
from supamove.sandbox.pgserver import PostgresServer, find_bindir
from supamove.sandbox.stackauth import StackAuthSandbox
from supamove.users.client import PAGE_SIZE

PROJECT, SECRET = "bench-project", "bench-secret-key-0123456789"
VALUE_CHECK = "export's user-id value check"
VERIFY_IDS = "verify's count of Supabase ids left"
PGCOPYDB = "peer: pgcopydb copy table-data"
MIGRATE = "supamove migrate --disable-fk"  # all five steps, every user created in a fresh Stack Auth
MIGRATE_AHEAD = "supamove migrate (users ahead)"  # the same, the users migrated before: their sync pass only
MIGRATE_OWN = "supamove migrate (seed's users)"  # from nothing, the FreshTrack-like source's own users only


TIMING = re.compile(r"^(\S+ \S+) \w+ supamove\.\w+: (?:timing: (.+) in ([\d.]+)s|(STEP \S+: (?:started|finished)))")


@dataclass
class Measure:
    name: str
    seconds: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    rows: int = 0
    megabytes: float = 0.0
    phases: dict[str, list[float]] = field(default_factory=dict)  # fixed costs, from the log's timing lines
    cpu: list[float] = field(default_factory=list)  # processor seconds the whole machine spent during the step

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu) if self.cpu else 0.0

    @property
    def peak_rss(self) -> float:
        return max(self.rss_mb) if self.rss_mb else 0.0


def run(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Run a command to completion; returns its peak RSS in MB (its own, not its children's)."""
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{err[-3000:]}")
    return usage.ru_maxrss / 1024


def phased(measure: Measure, cmd: list[str], env: dict[str, str], log: Path) -> float:
    """Run a supamove command; note the phases its log times, its start-up and its exit, in `measure`."""
    offset = log.stat().st_size if log.exists() else 0
    launched = time.time()
    rss = run(cmd, env)
    ended = time.time()
    with open(log, "rb") as handle:
        handle.seek(offset)
        lines = handle.read().decode().splitlines()
    steps: list[float] = []
    for line in lines:
        if found := TIMING.match(line):
            if found.group(2):
                measure.phases.setdefault(found.group(2), []).append(float(found.group(3)))
            else:
                steps.append(datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    if len(steps) == 2:
        measure.phases.setdefault("start-up (interpreter, imports, settings)", []).append(steps[0] - launched)
        measure.phases.setdefault("exit (summary, interpreter)", []).append(ended - steps[1])
    return rss


def migrate(measure: Measure, cmd: list[str], env: dict[str, str]) -> float:
    """Run `supamove migrate --json`; note when each step finished (seconds from the start) in `measure`."""
    proc = subprocess.Popen([*cmd, "--json"], env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    result = orjson.loads(out)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"supamove migrate failed: {result['error']}")
    for step, times in result["steps"].items():
        measure.phases.setdefault(f"{step} done at", []).append(times["finished"])
    return usage.ru_maxrss / 1024


def busy_seconds() -> float | None:
    """Processor time every process on this machine has used since boot (Linux's /proc/stat), else None.

    User, nice, system and interrupt time: the servers, the local Stack Auth and the commands alike. Time
    stolen by the hypervisor and idle or I/O wait time are not work, so they are left out.
    """
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = map(int, fields[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def timed(measure: Measure, action: Callable[[], float | None]) -> None:
    busy, started = busy_seconds(), time.perf_counter()
    rss = action()
    measure.seconds.append(time.perf_counter() - started)
    if busy is not None and (now := busy_seconds()) is not None:
        measure.cpu.append(now - busy)
    if rss:
        measure.rss_mb.append(rss)


def app_tables(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("""SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                               WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                               ORDER BY 1, 2""").fetchall()


def truncate(url: str, tables: list[tuple[str, str]]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {} CASCADE").format(
            sql.SQL(", ").join(sql.Identifier(*t) for t in tables)))
        conn.execute("DROP SCHEMA IF EXISTS _supamove CASCADE")


def add_users(url: str, count: int) -> None:
    """Extra bcrypt users in auth.users so migrate-users has `count` to create."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
                                    raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
            SELECT '00000000-0000-0000-0000-000000000000', md5('bench-user-' || g)::uuid, 'authenticated',
                   'authenticated', 'bench' || g || '@bench.test',
                   '$2a$06$abcdefghijklmnopqrstuu5Y0lQ9ZlG7GQ2v1qDzVvQ0Yb5o3nQfC', now(),
                   '{"provider": "email", "providers": ["email"]}', jsonb_build_object('full_name', 'Bench ' || g),
                   now(), now()
            FROM generate_series(1, %s) g""", (count,))


def row_count(text: str) -> int:
    """`1M`, `4M`, `250k` or a plain number."""
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def compile_supamove() -> None:
    """supamove's modules compiled to bytecode once, as `pip install` leaves them: from an editable install
    under PYTHONDONTWRITEBYTECODE=1 (which some machines set), every command would compile them again."""
    compileall.compile_dir(Path(supamove.__file__).parent, quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=row_count, default=1_000_000,
                        help="rows in public.readings: 1M (the default), 4M, or any number")
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each measurement (median)")
    parser.add_argument("--users", type=int, default=10_000, help="users for the migrate-users measurement")
    parser.add_argument("--jobs", type=int, default=2, help="parallel jobs for pg_dump/pg_restore and supamove")
    parser.add_argument("--user-sync", action="store_true",
                        help="only migrate-users: a first pass of --users users, then a sync pass with 1%% changed")
    args = parser.parse_args()
    compile_supamove()
    if args.user_sync:
        user_sync_bench(args.users)
        return

    work = Path(tempfile.mkdtemp(prefix="supamove-bench-"))
    source = PostgresServer("bench-source").start()
    target = PostgresServer("bench-target").start()
    stack = StackAuthSandbox(PROJECT, SECRET).start()
    try:
        measures = benchmark(args, work, source, target, stack)
        report(args, measures)
    finally:
        stack.stop()
        source.destroy()
        target.destroy()
        shutil.rmtree(work, ignore_errors=True)


def benchmark(args: argparse.Namespace, work: Path, source: PostgresServer, target: PostgresServer,
              stack: StackAuthSandbox) -> dict[str, Measure]:
    for server in (source, target):
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE app")
    print(f"seeding {args.rows:,} readings ...", flush=True)
    fixtures.create_source(source.url("app"), rows=args.rows)
    add_users(source.url("app"), args.users)
    with psycopg.connect(source.url("app"), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    fixtures.create_target(target.url("app"))
    src, tgt = source.url("app"), target.url("app")
    tables = app_tables(src)
    with psycopg.connect(src) as conn:
        rows = conn.execute("SELECT sum(n_live_tup) FROM pg_stat_user_tables WHERE schemaname = 'public'").fetchone()[0]
        size = conn.execute("SELECT sum(pg_table_size(format('%I.%I', schemaname, relname)::regclass)) "
                            "FROM pg_stat_user_tables WHERE schemaname = 'public'").fetchone()[0]
    rows, mb = int(rows), float(size) / 1e6
    bindir = source.bindir
    data = work / "migration-data"
    env = {"SUPABASE_DB_URL": src, "DATABASE_URL": tgt, "MIGRATION_DATA_DIR": str(data),
           "LOG_FILE_PATH": str(work / "migration.log"), "STACK_AUTH_PROJECT_ID": PROJECT,
           "STACK_AUTH_SECRET_KEY": SECRET, "STACK_AUTH_API_URL": stack.url}
    supamove = [sys.executable, "-m", "supamove"]
    log = work / "migration.log"
    jobs = ["--jobs", str(args.jobs)]
    names = ["reference: pg_dump + pg_restore", PGCOPYDB, "supamove export", "supamove import --disable-fk",
             "supamove import (default)", "supamove verify", "floor: raw COPY pipe", "supamove migrate-users", MIGRATE,
             MIGRATE_AHEAD, MIGRATE_OWN]
    m = {n: Measure(n, rows=rows, megabytes=mb) for n in names}
    m["supamove migrate-users"].rows = args.users + fixtures.seed_sizes(args.rows).users
    m[VALUE_CHECK] = Measure(VALUE_CHECK, rows=rows, megabytes=mb)
    m[VERIFY_IDS] = Measure(VERIFY_IDS, rows=rows, megabytes=mb)

    dump = work / "dump"
    for i in range(args.runs):
        print(f"run {i + 1}/{args.runs}", flush=True)
        shutil.rmtree(dump, ignore_errors=True)
        truncate(tgt, tables)
        timed(m["reference: pg_dump + pg_restore"], lambda: max(
            run([str(bindir / "pg_dump"), "--data-only", "-Fd", f"-j{args.jobs}", "-n", "public", "-f", str(dump), src]),
            run([str(bindir / "pg_restore"), "--data-only", "--disable-triggers", f"-j{args.jobs}", "-d", tgt, str(dump)])))
        if shutil.which("pgcopydb"):
            truncate(tgt, tables)
            timed(m[PGCOPYDB], lambda: pgcopydb(src, tgt, tables, args.jobs, work))
        truncate(tgt, tables)
        timed(m["floor: raw COPY pipe"], lambda: copy_pipe(src, tgt, tables, args.jobs))
        mapping = _keep_mapping(data, work)  # a fresh export each run; the users are migrated once
        shutil.rmtree(data, ignore_errors=True)
        timed(m["supamove export"], lambda: phased(m["supamove export"], [*supamove, "export", "--jobs", str(args.jobs)],
                                                   env, log))
        # the check's own time, as the export recorded it (it runs on a connection beside the copies)
        m[VALUE_CHECK].seconds.append(orjson.loads((data / "metadata.json").read_bytes())["userIdValueCheck"]["seconds"])
        if mapping:
            shutil.copy2(mapping, data / mapping.name)
        truncate(tgt, tables)
        if i == 0:
            run([*supamove, "migrate-users", "--concurrency", "8"], env)
        timed(m["supamove import --disable-fk"], lambda: phased(
            m["supamove import --disable-fk"], [*supamove, "import", "--disable-fk", *jobs], env, log))
        timed(m["supamove verify"], lambda: phased(m["supamove verify"], [*supamove, "verify", *jobs], env, log))
        # the count's own time, all tables together, as the report recorded it
        m[VERIFY_IDS].seconds.append(orjson.loads((data / "verification-report.json").read_bytes())
                                     ["summary"]["supabaseUserIdSeconds"])
        truncate(tgt, tables)
        timed(m["supamove import (default)"], lambda: phased(
            m["supamove import (default)"], [*supamove, "import", *jobs], env, log))
    for _ in range(args.runs):
        mapping = data / "user-mapping.json"
        mapping.unlink(missing_ok=True)
        for leftover in ("user-creates-pending.jsonl", "user-migration-report.json", "password-reset-required.json"):
            (data / leftover).unlink(missing_ok=True)
        fresh = StackAuthSandbox(PROJECT, SECRET).start()
        try:
            timed(m["supamove migrate-users"], lambda url=fresh.url: run(
                [*supamove, "migrate-users", "--concurrency", "8"], {**env, "STACK_AUTH_API_URL": url}))
        finally:
            fresh.stop()
    migrate_runs(args, m, [*supamove, "migrate", "--disable-fk", *jobs], env, data, (tgt, tables))
    if args.users:  # the same from nothing without the extra users: the window of the source as it was seeded
        remove_added_users(src)
        migrate_runs(args, m, [*supamove, "migrate", "--disable-fk", *jobs], env, data, (tgt, tables), MIGRATE_OWN)
    return m


def remove_added_users(url: str) -> None:
    """The users add_users added (no identity, no row of the application's tables names them)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM auth.users WHERE email LIKE 'bench%%@bench.test'")


def migrate_runs(args: argparse.Namespace, m: dict[str, Measure], cmd: list[str], env: dict[str, str], data: Path,
                 target: tuple[str, list[tuple[str, str]]], only: str | None = None) -> None:
    """`supamove migrate` from nothing (no export, no user, empty tables), then as the two-phase runbook's
    window: the users migrated ahead into the same Stack Auth, their mapping kept, only the data from nothing.
    `only`: the measure of a run from nothing, and nothing else."""
    stack, name = None, only or MIGRATE
    try:
        for _ in range(args.runs):
            if stack is not None:
                stack.stop()
            shutil.rmtree(data, ignore_errors=True)
            truncate(*target)
            stack = StackAuthSandbox(PROJECT, SECRET).start()
            timed(m[name], lambda url=stack.url: migrate(m[name], cmd, {**env, "STACK_AUTH_API_URL": url}))
        for _ in range(0 if only else args.runs):
            assert stack is not None
            for path in (data / "metadata.json", data / "tables", data / "auth", data / "verification-report.json"):
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            truncate(*target)
            timed(m[MIGRATE_AHEAD], lambda url=stack.url: migrate(m[MIGRATE_AHEAD], cmd,
                                                                  {**env, "STACK_AUTH_API_URL": url}))
    finally:
        if stack is not None:
            stack.stop()


def _keep_mapping(data: Path, work: Path) -> Path | None:
    mapping = data / "user-mapping.json"
    if not mapping.exists():
        return None
    return Path(shutil.copy2(mapping, work / mapping.name))


def pgcopydb(src: str, tgt: str, tables: list[tuple[str, str]], jobs: int, work: Path) -> float:
    """pgcopydb's table copy (COPY streamed source to target, no files) into the target's existing schema."""
    filters = work / "pgcopydb-filters.ini"
    filters.write_text("[include-only-table]\n" + "".join(f"{s}.{t}\n" for s, t in tables))
    return run(["pgcopydb", "copy", "table-data", "--source", src, "--target", tgt, "--table-jobs", str(jobs),
                "--dir", str(work / "pgcopydb"), "--filters", str(filters), "--restart"])


def copy_pipe(src: str, tgt: str, tables: list[tuple[str, str]], jobs: int) -> None:
    """The physical floor: COPY TO STDOUT straight into COPY FROM STDIN, no files, no checks."""

    def one(table: tuple[str, str]) -> None:
        name = sql.Identifier(*table)
        with psycopg.connect(src) as s, psycopg.connect(tgt) as t:
            t.execute("SET session_replication_role = replica")
            with s.cursor().copy(sql.SQL("COPY {} TO STDOUT").format(name)) as out, \
                    t.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(name)) as into:
                for chunk in out:
                    into.write(chunk)

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, tables))


def report(args: argparse.Namespace, m: dict[str, Measure]) -> None:
    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"PostgreSQL {_pg_version()}; rows in public: {m['supamove export'].rows:,}, "
          f"table data {m['supamove export'].megabytes:,.0f} MB; median of {args.runs} runs")
    print(f"{'step':34} {'seconds':>8} {'rows/s':>12} {'MB/s':>8} {'peak RSS MB':>12} {'CPU s':>7}")
    for measure in (x for x in m.values() if x.name not in (VALUE_CHECK, VERIFY_IDS) and x.seconds):
        rate = measure.rows / measure.median
        print(f"{measure.name:34} {measure.median:8.2f} {rate:12,.0f} {measure.megabytes / measure.median:8.1f} "
              f"{measure.peak_rss:12.0f} {measure.cpu_median:7.2f}")
    ref = m["reference: pg_dump + pg_restore"].median
    floor = m["floor: raw COPY pipe"].median
    fast = m["supamove export"].median + m["supamove import --disable-fk"].median
    safe = m["supamove export"].median + m["supamove import (default)"].median
    verify = m["supamove verify"].median
    print()
    print(f"export + import --disable-fk / pg_dump + pg_restore: {fast / ref:.2f}   (goal <= 0.8)")
    pair = ("supamove export", "supamove import --disable-fk")
    print(f"  run by run: {per_run(m, pair, 'reference: pg_dump + pg_restore')}   (each run against the "
          "reference of the same run: the machine's speed drifts)")
    print(f"export + import (default)    / pg_dump + pg_restore: {safe / ref:.2f}")
    if m[PGCOPYDB].seconds:
        peer = m[PGCOPYDB].median
        print(f"export + import --disable-fk / pgcopydb:            {fast / peer:.2f}")
        print(f"export + import (default)    / pgcopydb:            {safe / peer:.2f}")
        print(f"pg_dump + pg_restore         / pgcopydb:            {ref / peer:.2f}")
        users = m["supamove migrate-users"].rows
        print(f"migrate --disable-fk         / pgcopydb:            {m[MIGRATE].median / peer:.2f}   (goal <= 1.5; "
              f"all five steps, {users:,} users created)")
        if m[MIGRATE_OWN].seconds:
            print(f"migrate, the seed's users    / pgcopydb:            {m[MIGRATE_OWN].median / peer:.2f}   (goal <= "
                  f"1.5; the same from nothing with the seeded source's own {users - args.users:,} users, not "
                  f"{users:,})")
        print(f"migrate, users ahead         / pgcopydb:            {m[MIGRATE_AHEAD].median / peer:.2f}   "
              f"(the window of the two-phase runbook: users synchronised, nothing changed)")
        print(f"export + import --disable-fk + verify, one after the other / pgcopydb: {(fast + verify) / peer:.2f}"
              "   (the same window step by step, less the users' sync pass)")
    else:
        print("pgcopydb: not installed (apt-get install pgcopydb), not measured")
    print(f"export + import --disable-fk / floor:               {fast / floor:.2f}")
    print(f"verify (full checksums)      / pg_dump + pg_restore: {verify / ref:.2f}   (goal <= 0.35)")
    print(f"  run by run: {per_run(m, ('supamove verify',), 'reference: pg_dump + pg_restore')}")
    processor_time(m)
    print()
    print("fixed costs, before the first row moves and after the last (median seconds):")
    for measure in (x for x in m.values() if x.phases):
        print(f"  {measure.name.removeprefix('supamove ')}: " + ", ".join(f"{name} {statistics.median(times):.2f}"
                                                 for name, times in measure.phases.items()))
    check = m[VALUE_CHECK].median
    print(f"user-id value check: {check:.2f}s, {check / m['supamove export'].median:.0%} of the export's time "
          "(in parallel with the copies)   (target < 10%)")
    ids = m[VERIFY_IDS].median
    print(f"verify's count of Supabase user ids left: {ids:.2f}s, {ids / verify:.0%} of verify's time "
          "(table by table, beside the checksums)")
    print(f"peak RSS of supamove's processes, the largest of the commands: "
          f"{max(x.peak_rss for k, x in m.items() if k.startswith('supamove')):.0f} MB   (goal < 200)")
    users = m["supamove migrate-users"]
    print(f"migrate-users: {users.rows / users.median:,.0f} users/s with --concurrency 8   (target >= 200)")


def per_run(m: dict[str, Measure], steps: tuple[str, ...], against: str) -> str:
    """The ratio of each run to the reference measured in that same run, in run order."""
    runs = zip(*(m[s].seconds for s in steps), m[against].seconds, strict=True)
    return ", ".join(f"{sum(times[:-1]) / times[-1]:.2f}" for times in runs)


def processor_time(m: dict[str, Measure]) -> None:
    """Each goal's processor time, and the shortest time it allows: all cores busy from the start to the end.

    A ratio above its floor is time the cores stood idle; a floor above the goal means that no schedule of the
    same work meets it on this machine: the work itself has to shrink.
    """
    ref, peer = m["reference: pg_dump + pg_restore"], m[PGCOPYDB]
    if not ref.cpu:
        print("processor time: not measured (no /proc/stat)")
        return
    cores = os.cpu_count() or 1
    print()
    print(f"processor time, every process on the machine (median CPU seconds; the floor: all {cores} cores busy "
          "throughout):")
    fast = (m["supamove export"], m["supamove import --disable-fk"])
    lines: list[tuple[str, float, float, Measure, str | None]] = [
        ("export + import --disable-fk", sum(x.cpu_median for x in fast), sum(x.median for x in fast), ref, "0.8"),
        ("verify", m["supamove verify"].cpu_median, m["supamove verify"].median, ref, "0.35")]
    if peer.cpu:
        lines.append(("migrate --disable-fk", m[MIGRATE].cpu_median, m[MIGRATE].median, peer, "1.5"))
        if m[MIGRATE_OWN].cpu:
            lines.append(("migrate --disable-fk, seed's users", m[MIGRATE_OWN].cpu_median, m[MIGRATE_OWN].median,
                          peer, "1.5"))
        lines.append(("migrate, users ahead", m[MIGRATE_AHEAD].cpu_median, m[MIGRATE_AHEAD].median, peer, None))
    for name, cpu, wall, against, goal in lines:
        floor = cpu / cores
        print(f"  {name}: {cpu:.1f} CPU s, so at least {floor:.2f} s = {floor / against.median:.2f}x {against.name} "
              f"({f'goal <= {goal}; ' if goal else ''}measured {wall / against.median:.2f}x, "
              f"the cores {cpu / (cores * wall):.0%} busy)")
    for other in (ref, peer):
        if other.cpu:
            print(f"  {other.name}: {other.cpu_median:.1f} CPU s, the cores "
                  f"{other.cpu_median / (cores * other.median):.0%} busy")


# --- migrate-users: the first pass and the sync pass (python bench/run.py --user-sync) -------------

USERS_ROUTE, USER_ROUTE = "GET /api/v1/users 200", "GET /api/v1/users/{id} 200"
PATCH_ROUTE = "PATCH /api/v1/users/{id} 200"


def user_sync_bench(count: int) -> None:
    """users/s of a first pass and of a sync pass with 1% of the users changed, against the local Stack Auth.

    Asserts from the Stack Auth stand-in's request counts that the sync sends one read and one update per
    changed user and nothing for the others, besides the list of every user a page at a time (the credentials
    check, and every mapped user still there).
    """
    work = Path(tempfile.mkdtemp(prefix="supamove-bench-users-"))
    stack = StackAuthSandbox(PROJECT, SECRET).start()
    try:
        env = {"STACK_AUTH_API_URL": stack.url, "STACK_AUTH_PROJECT_ID": PROJECT, "STACK_AUTH_SECRET_KEY": SECRET,
               "MIGRATION_DATA_DIR": str(work / "migration-data"), "LOG_FILE_PATH": str(work / "bench.log")}
        users = [_bench_user(n) for n in range(count)]
        command = [sys.executable, "-m", "supamove", "migrate-users", "--concurrency", "8"]
        first = _users_pass(stack, work, users, command, env)
        changed = users[:: 100][: max(1, count // 100)]
        for user in changed:  # a new name and a new password: two fields, one update
            user["raw_user_meta_data"] = {"full_name": "Renamed " + user["email"]}
            user["encrypted_password"] = "$2a$04$" + "M" * 53
        sync = _users_pass(stack, work, users, command, env)
        quiet = _users_pass(stack, work, users, command, env)
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    assert first[1][USERS_ROUTE] >= 1 and stack.create_count() == count, "the first pass created every user"
    pages = -(-count // PAGE_SIZE)
    assert sync[1] == {USERS_ROUTE: pages, USER_ROUTE: len(changed), PATCH_ROUTE: len(changed)}, sync[1]
    assert quiet[1] == {USERS_ROUTE: pages}, quiet[1]  # unchanged users: no request of their own
    print(f"migrate-users first pass: {count:,} users in {first[0]:.2f} s = {count / first[0]:,.0f} users/s "
          "(--concurrency 8)")
    print(f"migrate-users sync pass:  {len(changed):,} of {count:,} changed, {sync[0]:.2f} s = "
          f"{count / sync[0]:,.0f} users/s compared; {len(changed):,} reads + {len(changed):,} updates sent")
    print(f"migrate-users, nothing changed: {quiet[0]:.2f} s; requests per user: 0, and {pages:,} list requests "
          "(asserted)")


def _bench_user(n: int) -> dict[str, object]:
    """An auth.users row as export writes it: an e-mail user with a bcrypt hash."""
    created = f"2024-01-01 00:00:{n % 60:02}.{n:06}+00"
    return {"id": f"00000000-0000-4000-8000-{n:012}", "email": f"user{n}@bench.example", "phone": None,
            "encrypted_password": "$2a$04$" + "B" * 53, "email_confirmed_at": created, "created_at": created,
            "raw_user_meta_data": {"full_name": f"User {n}"}, "raw_app_meta_data": {"provider": "email"},
            "is_anonymous": False, "deleted_at": None, "banned_until": None, "is_sso_user": False}


def _users_pass(stack: StackAuthSandbox, work: Path, users: list[dict[str, object]], command: list[str],
                env: dict[str, str]) -> tuple[float, dict[str, int]]:
    """One migrate-users run on this export: (seconds, the requests Stack Auth received)."""
    auth = work / "migration-data" / "auth"
    auth.mkdir(parents=True, exist_ok=True)
    (auth / "auth.users.jsonl").write_bytes(b"".join(orjson.dumps(u) + b"\n" for u in users))
    (auth / "auth.identities.jsonl").write_bytes(b"")
    before = dict(stack.requests)
    started = time.perf_counter()
    run(command, env)
    seconds = time.perf_counter() - started
    return seconds, {k: v - before.get(k, 0) for k, v in stack.requests.items() if v != before.get(k, 0)}


def _pg_version() -> str:
    out = subprocess.run([str(find_bindir() / "postgres"), "--version"], capture_output=True, text=True).stdout
    found = re.search(r"\(PostgreSQL\) (\S+)", out)
    return found.group(1) if found else "?"


if __name__ == "__main__":
    main()
