"""retrain: on `drift` or weekly, `dvc repro` (pool of 1), bless, package, deploy once ready.

Keyed by the data version: a second trigger for a version already retrained does nothing.
Lineage (data version -> model -> served Bento) goes to artifacts/retrain/lineage.json,
and the model card carries the data.dvc hash it was trained on.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task
from common import DRIFT, MODEL, default_args


@dag(
    dag_id="recops_retrain",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"), assets=DRIFT
    ),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["recops", "training", "deployment"],
    default_args=default_args(retry_delay=timedelta(minutes=1)),
    doc_md=__doc__,
)
def recops_retrain():
    @task.short_circuit
    def new_data_version() -> str | bool:
        """The data version to train on, or False (everything after is skipped) if done already."""
        from pipelines.core.paths import Layout
        from pipelines.data.snapshot import current_version
        from pipelines.loop.steps import already_retrained

        layout = Layout.from_env()
        version = current_version(layout.data)
        if version == "empty" or already_retrained(layout, version):
            print(f"data version {version}: already retrained (or no data); nothing to do")
            return False
        return version

    @task(pool="recops_dvc", retries=1)
    def repro(version: str) -> dict:
        """`dvc repro`: split ... select, package (the blessing gate + release).

        Between the pulls and pushes of the DVC remote (pipelines/loop/remote.py): a worker
        that does not share the project's disk pulls the outputs it lacks first, and what
        was trained is pushed after, for the hosts that serve or train next.
        """
        from pipelines.core.paths import Layout
        from pipelines.loop import remote
        from pipelines.loop.steps import repro

        layout = Layout.from_env()
        remote.pull(layout)
        blessing = repro(layout)
        remote.push(layout)
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
        from common import workspace

        from pipelines.loop.steps import deploy_release

        layout, params = workspace()
        result = deploy_release(layout, blessing, version, params.retrain)
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
        from pipelines.core.paths import Layout
        from pipelines.loop import deploy as serving
        from pipelines.loop.steps import record_lineage

        layout = Layout.from_env()
        entry = record_lineage(layout, version, blessing, serving.current(layout.serving))
        print(f"lineage: data {version} -> {entry['released']} (serving {entry['serving']})")
        return entry

    version = new_data_version()
    blessing = repro(version)
    deploy(version, blessing) >> record(version, blessing).as_teardown(setups=blessing.operator)


recops_retrain()
