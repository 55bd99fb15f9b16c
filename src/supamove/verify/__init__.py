"""Step 5: compare the source and the target, table by table, and locate the rows that differ.

- model: the options, each table's verdict with its differences, the report and its failure
- plan: which tables are compared (and which the export left out), for each the columns and key on either side
- checksum: the SQL that checksums rows inside PostgreSQL
- pools: a pool of sessions per side, so both sides always work at once
- locate: the rows that differ, by bisecting key ranges or bucketing row hashes
- structure: each table's columns, keys, checks and indexes, compared in both catalogs
- supabase_ids: the Supabase user ids still held by the target's columns
- sequences: every sequence of the export checked against the target's rows and the source's
- run: run_verify, table by table, writing verification-report.json
"""

from supamove.verify.model import (
    EMPTY_TARGET,
    ColumnChange,
    Difference,
    TableCheck,
    VerifyOptions,
    VerifyReport,
)
from supamove.verify.plan import TableComparison
from supamove.verify.run import run_verify

__all__ = [
    "EMPTY_TARGET", "ColumnChange", "Difference", "TableCheck", "TableComparison", "VerifyOptions",
    "VerifyReport", "run_verify",
]
