"""`supamove migrate`: the runbook's steps as one overlapped pipeline, above the steps it drives.

- model: the options (each step's derived from them), the endpoints, the result with each step's times
- board: what each step finished, and so which tables may load now
- run: run_migrate, the export here, the users and the loads on threads, then the checks of the whole

No step imports this package; it calls only the steps' library functions.
"""

from supamove.pipeline.model import STEPS, MigrateResult, PipelineOptions
from supamove.pipeline.run import run_migrate

__all__ = ["STEPS", "MigrateResult", "PipelineOptions", "run_migrate"]
