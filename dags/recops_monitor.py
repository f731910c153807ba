"""monitor: on new `data`, an Evidently drift report and decision per batch; `drift` if crossed."""

from __future__ import annotations

from airflow.sdk import dag, task
from common import DATA, DRIFT, default_args


@dag(
    dag_id="recops_monitor",
    schedule=[DATA],
    catchup=False,
    max_active_runs=1,
    tags=["recops", "monitoring"],
    default_args=default_args(),
    doc_md=__doc__,
)
def recops_monitor():
    @task
    def assess() -> list[dict]:
        from common import workspace

        from pipelines.loop.steps import monitor_batch, unmonitored_batches

        layout, params = workspace()
        mask = params.evaluate.mask_history  # the protocol's choice on repeats
        decisions = [
            monitor_batch(layout, batch, params.monitoring, mask)
            for batch in unmonitored_batches(layout)
        ]
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
