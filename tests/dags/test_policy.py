"""DagBag: no import errors, the DAG policy of issue 10, and cheap parsing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(DAGS.glob("recops_*.py"))
HEAVY = ("pandas", "numpy", "torch", "evidently", "great_expectations", "bentoml", "pipelines")


@pytest.fixture(scope="module")
def bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors_and_every_dag_is_there(bag):
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {"recops_ingest", "recops_monitor", "recops_retrain"}


def test_policy_tags_retries_max_active_runs_callbacks(bag):
    for dag in bag.dags.values():
        assert dag.tags and "recops" in dag.tags, dag.dag_id
        assert dag.max_active_runs == 1, dag.dag_id
        for t in dag.tasks:
            assert t.retries >= 1, f"{dag.dag_id}.{t.task_id}"
            assert t.on_failure_callback, f"{dag.dag_id}.{t.task_id}"


def test_dvc_runs_and_appends_one_at_a_time(bag):
    repro = bag.dags["recops_retrain"].get_task("repro")
    append = bag.dags["recops_ingest"].get_task("append")
    assert repro.pool == append.pool == "recops_dvc"  # data/ holds still under dvc repro


def test_assets_chain_the_dags(bag):
    ingest, monitor = bag.dags["recops_ingest"], bag.dags["recops_monitor"]
    assert [a.uri for a in ingest.get_task("append").outlets] == ["recops://data/"]
    assert [a.uri for a in monitor.get_task("signal").outlets] == ["recops://drift/"]


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_each_file_parses_fast_without_heavy_imports(path):
    code = (
        "import sys, time, importlib.util, airflow.sdk\n"
        f"sys.path.append({str(DAGS)!r})\n"  # as Airflow's BundleDagBag does
        "t = time.perf_counter()\n"
        f"spec = importlib.util.spec_from_file_location('d', {str(path)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(time.perf_counter() - t)\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    lines = done.stdout.splitlines()
    seconds, heavy = lines[-2], lines[-1].strip()
    assert float(seconds) < 2.0
    assert heavy == "", f"{path.name} imports {heavy} at parse time"


def test_the_shared_module_is_not_parsed_as_a_dag():
    ignored = (DAGS / ".airflowignore").read_text().split()
    assert {"common.py", "standalone.py"} <= set(ignored)


def test_failure_callback_writes_a_readable_line(tmp_path, monkeypatch):
    from pipelines.loop.steps import failure_line

    monkeypatch.setenv("RECOPS_WORKSPACE", str(tmp_path))

    class TI:
        dag_id, task_id, run_id = "recops_retrain", "repro", "manual__1"

    line = failure_line({"task_instance": TI(), "exception": RuntimeError("dvc repro failed (1)")})
    assert line == "FAILED recops_retrain.repro run manual__1: RuntimeError: dvc repro failed (1)"
    assert (tmp_path / "artifacts" / "orchestration" / "failures.log").read_text().strip() == line
