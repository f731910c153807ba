"""monitor: on new `data`, an Evidently drift report and decision per batch; `drift` if crossed."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, dag, task

DATA = Asset("recops://data", extra={"path": "data/"})
DRIFT = Asset("recops://drift", extra={"path": "artifacts/monitoring/"})
ARGS = {
    "retries": 1,
    "retry_delay": timedelta(seconds=30),
    "on_failure_callback": lambda c: _failed(c),
}


def _failed(context):
    from pipelines.monitoring.loop import failure_line

    failure_line(context)


@dag(
    dag_id="recops_monitor",
    schedule=[DATA],
    catchup=False,
    max_active_runs=1,
    tags=["recops", "monitoring"],
    default_args=ARGS,
    doc_md=__doc__,
)
def recops_monitor():
    @task
    def assess() -> list[dict]:
        from pipelines.monitoring.loop import Workspace, monitor_batch, unmonitored_batches

        ws = Workspace.from_env()
        decisions = [monitor_batch(ws, batch) for batch in unmonitored_batches(ws)]
        for d in decisions:
            print(f"{d['batch']}: {d['status']}: {d['reasons'][0]} (report: {d['report']})")
        return decisions

    @task(outlets=[DRIFT])
    def signal(decisions: list[dict]) -> dict:
        """Emits `drift` only when a threshold was crossed (a skipped task emits no event)."""
        from airflow.sdk.exceptions import AirflowSkipException

        drifted = [d for d in decisions if d["drift"]]
        if not drifted:
            raise AirflowSkipException("no drift: no retrain")
        return {
            "batches": [d["batch"] for d in drifted],
            "data_version": drifted[-1]["data_version"],
            "reason": drifted[-1]["reasons"][0],
        }

    signal(assess())


recops_monitor()
