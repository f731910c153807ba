"""ingest: pick up landed batches, validate, quarantine failures, append good ones; emit `data`."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task
from common import DATA, default_args


@dag(
    dag_id="recops_ingest",
    schedule=timedelta(minutes=10),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["recops", "ingest"],
    default_args=default_args(),
    doc_md=__doc__,
)
def recops_ingest():
    @task
    def find() -> list[str]:
        from pipelines.core.paths import Layout
        from pipelines.loop.steps import pending_batches

        return pending_batches(Layout.from_env())

    @task(pool="recops_dvc", outlets=[DATA])
    def append(names: list[str]) -> list[dict]:
        """A run with nothing accepted is skipped, so `data` is not emitted.

        In the pool `dvc repro` uses: data/ never changes under a training run, and its
        `dvc add` never meets the repro's DVC lock.
        """
        from airflow.sdk.exceptions import AirflowSkipException
        from common import workspace

        from pipelines.loop.steps import ingest_batch

        layout, params = workspace()
        results = [ingest_batch(layout, name, params.ingest, params.replay) for name in names]
        for r in results:
            print(f"{r['batch']}: {r['status']} {r['counts'] or ''} {'; '.join(r['messages'])}")
        if not any(r["status"] == "accepted" for r in results):
            raise AirflowSkipException("no batch accepted: nothing new in data/")
        return results

    append(find())


recops_ingest()
