"""ingest: pick up landed batches, validate, quarantine failures, append good ones; emit `data`."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, dag, task

DATA = Asset("recops://data", extra={"path": "data/"})
ARGS = {
    "retries": 1,
    "retry_delay": timedelta(seconds=30),
    "on_failure_callback": lambda c: _failed(c),
}


def _failed(context):
    from pipelines.monitoring.loop import failure_line

    failure_line(context)


@dag(
    dag_id="recops_ingest",
    schedule=timedelta(minutes=10),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["recops", "ingest"],
    default_args=ARGS,
    doc_md=__doc__,
)
def recops_ingest():
    @task
    def find() -> list[str]:
        from pipelines.monitoring.loop import Workspace, pending_batches

        return pending_batches(Workspace.from_env())

    @task(pool="recops_dvc", outlets=[DATA])
    def append(names: list[str]) -> list[dict]:
        """A run with nothing accepted is skipped, so `data` is not emitted.

        In the pool `dvc repro` uses: data/ never changes under a training run, and its
        `dvc add` never meets the repro's DVC lock.
        """
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.monitoring.loop import Workspace, ingest_batch

        results = [ingest_batch(Workspace.from_env(), name) for name in names]
        for r in results:
            print(f"{r['batch']}: {r['status']} {r['counts'] or ''} {'; '.join(r['messages'])}")
        if not any(r["status"] == "accepted" for r in results):
            raise AirflowSkipException("no batch accepted: nothing new in data/")
        return results

    append(find())


recops_ingest()
