"""A table whose file is larger than --split-tables-larger-than loads as --jobs byte ranges at once, each in
a transaction of its own; a crash or a refused row leaves the ranges loaded recorded, and the rerun loads
the others and puts back the indexes, foreign keys and triggers it set aside."""

from __future__ import annotations

from pathlib import Path

from conftest import (
    BIG_ROWS,
    assert_verify_passes,
    error_line,
    import_state,
    kill_when,
    make_big_table,
    wait_for_copy_into,
    write_mapping,
)

from supamove.importer import workers

SPLIT = ("--split-tables-larger-than", "1")  # fault_big's file is about 20 MB


def indexes(dbs) -> list[str]:
    with dbs.target() as conn:
        return [r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'fault_big' ORDER BY 1")]


def set_aside(dbs) -> list[tuple]:
    with dbs.target() as conn:
        return conn.execute("SELECT s.table_name, s.ranges, (SELECT count(*) FROM _supamove.import_ranges r "
                            "WHERE r.table_name = s.table_name) FROM _supamove.import_split s").fetchall()


def exported_with_big_table(cli, dbs, data_dir: Path) -> None:
    make_big_table(dbs)
    for side in (dbs.source, dbs.target):  # a trigger and an index of the application's: set aside, then back
        with side() as conn:
            conn.execute("CREATE INDEX fault_big_at_idx ON public.fault_big (at)")
            conn.execute("CREATE FUNCTION public.fault_stamp() RETURNS trigger LANGUAGE plpgsql AS "
                         "$$BEGIN NEW.payload := 'stamped'; RETURN NEW; END$$")
            conn.execute("CREATE TRIGGER fault_stamp BEFORE INSERT ON public.fault_big FOR EACH ROW "
                         "EXECUTE FUNCTION public.fault_stamp()")
    assert cli("export").exit_code == 0
    write_mapping(dbs, data_dir)


def test_a_big_table_loads_as_ranges_and_comes_out_whole(cli, dbs, data_dir: Path, env) -> None:
    exported_with_big_table(cli, dbs, data_dir)
    result = cli("import", *SPLIT)
    assert result.exit_code == 0, result.output
    log = Path(env["LOG_FILE_PATH"]).read_text()
    assert f"loaded public.fault_big as 2 ranges: {BIG_ROWS} rows" in log
    assert ("public", "fault_big", BIG_ROWS) in import_state(dbs) and set_aside(dbs) == []
    assert indexes(dbs) == ["fault_big_at_idx", "fault_big_pkey"]
    with dbs.target() as conn:
        assert conn.execute("SELECT tgenabled FROM pg_trigger WHERE tgname = 'fault_stamp'").fetchone() == ("O",)
        assert conn.execute("SELECT count(*) FROM public.fault_big WHERE payload = 'stamped'").fetchone() == (0,)
    assert_verify_passes(cli)


def test_a_refused_range_leaves_the_others_and_the_rerun_loads_the_rest(cli, dbs, data_dir: Path, env) -> None:
    exported_with_big_table(cli, dbs, data_dir)
    with dbs.target() as conn:  # the last range holds row 140000: the target refuses it
        conn.execute("ALTER TABLE public.fault_big ADD CONSTRAINT fault_no_140000 CHECK (id <> 140000)")
    refused = cli("import", *SPLIT)
    assert refused.exit_code == 4, refused.output
    line = error_line(refused.output)
    assert line.startswith(  # the line of the file, though its range starts half-way
        "Error: the target rejected a row of public.fault_big at line 140000 of public.fault_big.copy: new row "
        "for relation \"fault_big\" violates check constraint \"fault_no_140000\" (Failing row contains (140000, ")
    assert line.endswith("(fix: correct the value or the target column type; the ranges of public.fault_big "
                         "loaded so far stay, and the rerun loads the others)")
    assert set_aside(dbs) == [("fault_big", 2, 1)] and indexes(dbs) == []
    plan = cli("import", "--dry-run")
    assert plan.exit_code == 0, plan.output  # a table partly loaded as ranges is not "holding rows"
    assert "resumes an interrupted load" in plan.output
    with dbs.target() as conn:
        conn.execute("ALTER TABLE public.fault_big DROP CONSTRAINT fault_no_140000")
    result = cli("import", "--jobs", "1")  # the rerun keeps the ranges of the first run
    assert result.exit_code == 0, result.output
    assert "resuming public.fault_big: 1 of 2 ranges loaded by a previous run" in Path(env["LOG_FILE_PATH"]).read_text()
    assert set_aside(dbs) == [] and indexes(dbs) == ["fault_big_at_idx", "fault_big_pkey"]
    assert_verify_passes(cli)


def test_a_killed_range_load_resumes_without_doubles(cli, dbs, data_dir: Path) -> None:
    exported_with_big_table(cli, dbs, data_dir)
    # Big enough for worker processes: the rerun also shows they died with the killed import (they
    # would hold the data directory's lock).
    assert (data_dir / "tables" / "public.fault_big.copy").stat().st_size >= workers.POOL_BYTES
    process = cli.process("import", *SPLIT)
    kill_when(process, lambda: wait_for_copy_into(dbs, "fault_big", process))
    assert [name for name, _, _ in set_aside(dbs)] == ["fault_big"]
    result = cli("import", *SPLIT)
    assert result.exit_code == 0, result.output
    with dbs.target() as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT id) FROM public.fault_big").fetchone() == (BIG_ROWS,
                                                                                                      BIG_ROWS)
    assert set_aside(dbs) == [] and indexes(dbs) == ["fault_big_at_idx", "fault_big_pkey"]
    assert_verify_passes(cli)


def test_another_export_over_a_partial_range_load_needs_truncate_first(cli, dbs, data_dir: Path) -> None:
    exported_with_big_table(cli, dbs, data_dir)
    with dbs.target() as conn:
        conn.execute("ALTER TABLE public.fault_big ADD CONSTRAINT fault_no_140000 CHECK (id <> 140000)")
    assert cli("import", *SPLIT).exit_code == 4
    with dbs.target() as conn:
        conn.execute("ALTER TABLE public.fault_big DROP CONSTRAINT fault_no_140000")
    assert cli("export", "--force", "--tables", "fault_big").exit_code == 0  # a new snapshot, a new file
    refused = cli("import", *SPLIT)
    assert refused.exit_code == 4, refused.output
    assert error_line(refused.output).startswith(
        "Error: target table public.fault_big holds part of an interrupted load of another export (snapshot ")
    assert error_line(refused.output).endswith(
        "(fix: run `supamove import --truncate-first`: it empties the table, puts them back and loads this export)")
    result = cli("import", "--truncate-first", "--yes")  # whole, this time: the indexes are back first
    assert result.exit_code == 0, result.output
    assert set_aside(dbs) == [] and indexes(dbs) == ["fault_big_at_idx", "fault_big_pkey"]
    with dbs.target() as conn:
        assert conn.execute("SELECT tgenabled FROM pg_trigger WHERE tgname = 'fault_stamp'").fetchone() == ("O",)
    assert_verify_passes(cli)


def test_a_file_changed_since_the_export_commits_no_range(cli, dbs, data_dir: Path) -> None:
    """The ranges start before the file's SHA-256 is known: none commits until it is the export's."""
    exported_with_big_table(cli, dbs, data_dir)
    path = data_dir / "tables" / "public.fault_big.copy"
    text = path.read_bytes()
    at = text.index(b'\n140000\t') + 1  # a row of the last range: its values stay valid, the file is not the same
    path.write_bytes(text[:at] + b'149999\t' + text[at + len(b'140000\t'):])
    result = cli("import", *SPLIT)
    assert result.exit_code == 5 and "public.fault_big.copy" in error_line(result.output)
    assert "the file was changed or damaged" in error_line(result.output)
    with dbs.target() as conn:
        assert conn.execute("SELECT count(*) FROM public.fault_big").fetchone() == (0,)
    assert set_aside(dbs) == [("fault_big", 2, 0)]



def test_an_index_the_loaded_ranges_break_is_named_and_the_fix_it_gives_works(cli, dbs, data_dir: Path) -> None:
    exported_with_big_table(cli, dbs, data_dir)
    with dbs.target() as conn:  # ids 1 and 100001 collide in it, once the ranges are in
        conn.execute("CREATE UNIQUE INDEX fault_big_bucket ON public.fault_big ((id % 100000))")
    refused = cli("import", *SPLIT)
    assert refused.exit_code == 4, refused.output
    line = error_line(refused.output)
    assert line.startswith('Error: public.fault_big: could not create unique index "fault_big_bucket": Key ((id % '
                           "100000::bigint))=("), line
    assert line.endswith("is duplicated. (fix: correct the rows in the source, export the table again, then run "
                         "`supamove import --truncate-first` (its ranges stay loaded, without its indexes, until then))")
    assert set_aside(dbs) == [("fault_big", 2, 2)] and indexes(dbs) == []
    with dbs.source() as conn:  # the rows corrected in the source
        conn.execute("DELETE FROM public.fault_big WHERE id > 100000")
    assert cli("export", "--force", "--tables", "public.fault_big").exit_code == 0
    result = cli("import", "--truncate-first", "--yes", *SPLIT)
    assert result.exit_code == 0, result.output
    assert set_aside(dbs) == [] and indexes(dbs) == ["fault_big_at_idx", "fault_big_bucket", "fault_big_pkey"]
    with dbs.target() as conn:
        assert conn.execute("SELECT count(*), max(id) FROM public.fault_big").fetchone() == (100000, 100000)
