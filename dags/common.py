"""What the three DAGs share: the Assets that chain them, default args, the failure callback.

Not a DAG file (dags/.airflowignore skips it); each DAG imports it. Heavy imports stay
inside the functions, so parsing a DAG stays cheap.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset

# emitted by recops_ingest when a batch was appended; schedules recops_monitor
DATA = Asset("recops://data", extra={"path": "data/"})
# emitted by recops_monitor when a batch drifted; schedules recops_retrain
DRIFT = Asset("recops://drift", extra={"path": "artifacts/monitoring/"})
# emitted by recops_retrain when a new model is served
MODEL = Asset("recops://model", extra={"path": "artifacts/serving/current.json"})


def failed(context) -> None:
    """One line per failed task in the workspace's failures log (artifacts/orchestration/)."""
    from pipelines.loop.steps import failure_line

    failure_line(context)


def default_args(retry_delay: timedelta = timedelta(seconds=30)) -> dict:
    return {"retries": 1, "retry_delay": retry_delay, "on_failure_callback": failed}


def workspace():
    """(layout, params) of the workspace the tasks work in, params read once per task."""
    from pipelines.core.config import load_params
    from pipelines.core.paths import Layout

    layout = Layout.from_env()
    return layout, load_params(layout.params)
