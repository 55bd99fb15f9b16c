"""Step 4: load the exported tables into the target, in FK order, user ids remapped, resumable.

- model: the options, the plan of each table, the result
- plan: the plan, and every reason the import cannot succeed (--dry-run stops there)
- mapping: the user mapping, and the exported user ids checked against it
- scan: the export files checked (SHA-256, rows, JSON): before the load on worker processes, or as they load
- schedule: which groups load when, on --jobs connections
- convert: JSON lines to COPY text, on a thread ahead of the load
- load: each group in one transaction: triggers, foreign keys, sequences, state
- rows: one COPY of a file (or of a range of it), and the state row that records a table
- ranges: a big table loaded as byte ranges of its file on several connections, in three committed steps
- setaside: what a load turns off meanwhile (triggers, foreign keys, NOT VALID checks)
- sequences: each sequence continued from the source's state
- indexes: a table's indexes dropped for its COPY and built once after it
- orphans: foreign keys checked after a --disable-fk load
- views: the materialized views refreshed once every table is loaded
"""

from supamove.importer.load import finish_import, run_import
from supamove.importer.model import (
    ColumnLoad,
    ImportOptions,
    ImportPlan,
    ImportResult,
    TableImport,
    TablePlan,
    Unmapped,
    WholeLoad,
)
from supamove.importer.plan import check_load_target, check_target_tables, make_plan, plan_import
from supamove.importer.scan import line_blocks

__all__ = [
    "ColumnLoad", "ImportOptions", "ImportPlan", "ImportResult", "TableImport", "TablePlan", "Unmapped",
    "WholeLoad", "check_load_target", "check_target_tables", "finish_import", "line_blocks", "make_plan", "plan_import", "run_import",
]
