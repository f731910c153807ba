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
        """Switch to the new Bento once its /readyz answers (params.yaml retrain.ready_timeout).

        Nothing blessed: skipped, so `model` is emitted only on a switch. A server that never
        gets ready fails this task; the old one keeps serving.
        """
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.monitoring.loop import Workspace, deploy_release

        result = deploy_release(Workspace.from_env(), blessing, version)
        if not result["switched"]:
            raise AirflowSkipException(f"data {version}: {result['why']}; the champion stays")
        print(f"data {version}: serving {result['serving']['bento']}")
        return result

    @task
    def record(version: str, blessing: dict) -> dict:
        """Lineage, whatever deploy did: a failed switch still records what was trained.

        The teardown of `repro`: it runs once repro succeeded, and a failed deploy still
        fails the run (a teardown does not decide the run's state).
        """
        from pipelines.monitoring import deploy as serving
        from pipelines.monitoring.loop import Workspace, record_lineage

        ws = Workspace.from_env()
        entry = record_lineage(ws, version, blessing, serving.current(ws.serving))
        print(f"lineage: data {version} -> {entry['released']} (serving {entry['serving']})")
        return entry

    version = new_data_version()
    blessing = repro(version)
    deploy(version, blessing) >> record(version, blessing).as_teardown(setups=blessing.operator)


recops_retrain()
