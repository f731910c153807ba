"""retrain: on `drift` or weekly, `dvc repro` (pool of 1), bless, package, deploy once ready.

Keyed by the data version: a second trigger for a version already retrained does nothing.
Lineage (data version -> model -> served Bento) goes to artifacts/retrain/lineage.json,
and the model card carries the data.dvc hash it was trained on.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, dag, task

DRIFT = Asset("recops://drift", extra={"path": "artifacts/monitoring/"})
MODEL = Asset("recops://model", extra={"path": "artifacts/serving/current.json"})
ARGS = {
    "retries": 1,
    "retry_delay": timedelta(minutes=1),
    "on_failure_callback": lambda c: _failed(c),
}
READY_TIMEOUT = 180.0  # seconds a new Bento gets to answer /readyz before the old one stays


def _failed(context):
    from pipelines.monitoring.loop import failure_line

    failure_line(context)


@dag(
    dag_id="recops_retrain",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"), assets=DRIFT
    ),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["recops", "training", "deployment"],
    default_args=ARGS,
    doc_md=__doc__,
)
def recops_retrain():
    @task.short_circuit
    def new_data_version() -> str | bool:
        """The data version to train on, or False (everything after is skipped) if done already."""
        from pipelines.data.append import current_version
        from pipelines.monitoring.loop import Workspace, already_retrained

        ws = Workspace.from_env()
        version = current_version(ws.data)
        if version == "empty" or already_retrained(ws, version):
            print(f"data version {version}: already retrained (or no data); nothing to do")
            return False
        return version

    @task(pool="recops_dvc", retries=1)
    def repro(version: str) -> dict:
        """`dvc repro`: split ... select, package (the blessing gate + release)."""
        from pipelines.monitoring.loop import Workspace, repro

        blessing = repro(Workspace.from_env())
        print(
            f"data {version}: blessed={blessing.get('blessed')} released={blessing.get('released')}"
        )
        return blessing

    @task(outlets=[MODEL])
    def deploy(version: str, blessing: dict) -> dict:
        from pipelines.monitoring.loop import Workspace, deploy_release

        return deploy_release(Workspace.from_env(), blessing, version, READY_TIMEOUT)

    @task(trigger_rule="all_done")
    def record(version: str, blessing: dict) -> dict:
        """Lineage, whatever deploy did: a failed switch still records what was trained."""
        from pipelines.monitoring import deploy as serving
        from pipelines.monitoring.loop import Workspace, record_lineage

        ws = Workspace.from_env()
        entry = record_lineage(ws, version, blessing, serving.current(ws.serving))
        print(f"lineage: data {version} -> {entry['released']} (serving {entry['serving']})")
        return entry

    version = new_data_version()
    blessing = repro(version)
    deploy(version, blessing) >> record(version, blessing)


recops_retrain()
