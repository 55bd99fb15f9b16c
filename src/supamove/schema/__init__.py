"""Prepare the target: the application schema, made from pg_dump's, that a plain PostgreSQL accepts.

- model: the options, pg_dump's table-of-contents entries, schema-report.json
- dump: pg_dump --schema-only, its table of contents (pg_restore -l), the kept entries as SQL
- facts: what the source catalog says of each entry (platform objects used, grantees, roles)
- select: each entry kept, changed or left out, with the reason
- shim: schemas, extensions, roles and the auth compatibility schema schema.sql starts with
- apply: schema.sql run on the target in one transaction, after its checks
- run: the step
"""

from supamove.schema.apply import ApplyResult, apply_schema
from supamove.schema.model import Extension, ReportItem, SchemaOptions, SchemaReport, TocEntry
from supamove.schema.run import SchemaResult, make_schema, run_schema

__all__ = [
    "ApplyResult", "Extension", "ReportItem", "SchemaOptions", "SchemaReport", "SchemaResult", "TocEntry",
    "apply_schema", "make_schema", "run_schema",
]
