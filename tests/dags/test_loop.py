"""The whole loop under Airflow's own ``dag.test()``: the real DAGs on tiny synthetic weeks.

``dag.test()`` runs one DAG run in this process (tasks, XCom, skips, retries, the failure
callback, asset events in the metadata DB); it does not start the DAGs an asset event
schedules. So each step checks which asset events a run emitted (its outlets) and tests
the DAG that event would trigger itself, exactly when the event exists.

The story is run once per module, in order, by ``Story``; each step records what it saw
when it ran (task states, events, files), and each test asserts on one step, so the
tests hold in any order (pytest-randomly). Training is ``tests/dags/tiny_repro.py`` (real
split, features, model save and package stages; written metrics) and the served server a
stand-in with a real /readyz (``tests/loop/fake_server.py``); ingestion,
validation, quarantine, Evidently drift, the blessing gate, the Bento build, the
readiness-checked switch and the lineage are the real code.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.core.paths import PROJECT
from pipelines.loop import stream
from pipelines.loop.deploy import is_ready
from tests.monitoring.synthetic import synthetic_raw

DAGS = PROJECT.root / "dags"
TINY_REPRO = Path(__file__).with_name("tiny_repro.py")
SERVER = PROJECT.root / "tests" / "loop" / "fake_server.py"
READY = f"{sys.executable} {SERVER} --port {{port}} --bento {{bento}}"
NEVER_READY = READY + " --never-ready"
DATA, DRIFT, MODEL = "recops://data/", "recops://drift/", "recops://model/"


def bentos_dir(ws: Path) -> Path:
    return ws / ".bentoml" / "bentos" / "recops_recommender"


def _value(state) -> str:
    return str(getattr(state, "value", state))


def _states(run) -> dict[str, str]:
    return {ti.task_id: _value(ti.state) for ti in run.get_task_instances()}


def _events(run) -> list[str]:
    """The asset URIs this DAG run emitted (one per outlet event)."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent).where(
                AssetEvent.source_dag_id == run.dag_id, AssetEvent.source_run_id == run.run_id
            )
        ).all()
        return sorted(event.asset.uri for event in rows)


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


class Story:
    """The weeks of the loop, run once each, in order, whatever order the tests ask in."""

    def __init__(self, ws: Path, dags: dict):
        self.ws, self.dags = ws, dags
        # every item exists from the first week: a clean week brings no never-seen item
        raw = synthetic_raw(events_per_week=300, weeks=4, initial_weeks=1)
        self.feed = stream.cut(raw, initial_weeks=2)
        self.seen: dict[str, dict] = {}

    def _test(self, dag_id: str) -> dict:
        run = self.dags[dag_id].test()
        tries = {ti.task_id: ti.try_number for ti in run.get_task_instances()}
        return {
            "state": _value(run.state),
            "tasks": _states(run),
            "tries": tries,
            "events": _events(run),
        }

    def _land(self, week: int, **variant) -> None:
        stream.drop_week(self.feed, self.ws / "landing", week, **variant)

    def _files(self) -> dict:
        return {
            "ledger": [e["batch"] for e in _read(self.ws / "data" / "ledger.json")["batches"]],
            "lineage": _read(self.ws / "artifacts" / "retrain" / "lineage.json"),
            "serving": _read(self.ws / "artifacts" / "serving" / "current.json"),
            "blessing": _read(self.ws / "artifacts" / "release" / "blessing.json"),
            "bentos": sorted(p.name for p in bentos_dir(self.ws).glob("*") if p.is_dir()),
            "latest": (bentos_dir(self.ws) / "latest").read_text().strip()
            if (bentos_dir(self.ws) / "latest").exists()
            else None,
        }

    def step(self, name: str) -> dict:
        order = ["initial", "corrupt", "clean", "shift", "again", "never_ready"]
        for earlier in order[: order.index(name) + 1]:
            if earlier not in self.seen:
                self.seen[earlier] = getattr(self, f"_{earlier}")()
        return self.seen[name]

    def _initial(self) -> dict:
        self._land(0)
        return {"ingest": self._test("recops_ingest"), **self._files()}

    def _corrupt(self) -> dict:
        self._land(1, corrupted=True)
        out = {"ingest": self._test("recops_ingest")}
        # nothing emitted, so nothing would run; a monitor run anyway finds nothing to judge
        out["monitor"] = self._test("recops_monitor")
        return {**out, **self._files()}

    def _clean(self) -> dict:
        self._land(1)
        out = {"ingest": self._test("recops_ingest")}
        if DATA in out["ingest"]["events"]:
            out["monitor"] = self._test("recops_monitor")
        out["decision"] = _read(self.ws / "artifacts" / "monitoring" / "week-01" / "decision.json")
        return {**out, **self._files()}

    def _shift(self) -> dict:
        self._land(2, shifted="new-items")
        out = {"ingest": self._test("recops_ingest")}
        if DATA in out["ingest"]["events"]:
            out["monitor"] = self._test("recops_monitor")
            if DRIFT in out["monitor"]["events"]:
                out["retrain"] = self._test("recops_retrain")
        return {**out, **self._files()}

    def _again(self) -> dict:
        return {"retrain": self._test("recops_retrain"), **self._files()}

    def _never_ready(self) -> dict:
        """A new week, the weekly retrain, a blessed model whose server never gets ready."""
        self._land(3)
        out = {"ingest": self._test("recops_ingest")}
        params = yaml.safe_load((self.ws / "params.yaml").read_text())
        params["retrain"]["ready_timeout"] = 2
        (self.ws / "params.yaml").write_text(yaml.safe_dump(params))
        os.environ["RECOPS_SERVE_CMD"] = NEVER_READY
        deploy = self.dags["recops_retrain"].get_task("deploy")
        delay, deploy.retry_delay = deploy.retry_delay, timedelta(0)  # retry now, not in 1 min
        try:
            out["retrain"] = self._test("recops_retrain")
        finally:
            deploy.retry_delay = delay
            os.environ["RECOPS_SERVE_CMD"] = READY
        failures = self.ws / "artifacts" / "orchestration" / "failures.log"
        out["failures"] = failures.read_text().splitlines() if failures.exists() else []
        return {**out, **self._files()}


@pytest.fixture(scope="module")
def story(airflow_db, tmp_path_factory):
    from airflow.dag_processing.dagbag import DagBag

    ws = tmp_path_factory.mktemp("workspace")
    params = yaml.safe_load(PROJECT.params.read_text())
    params["monitoring"].update(min_events=50, reference_rows=1000)
    # the gate compares on the few held-out events, and tolerates what tiny data makes noisy
    params["gate"]["min_cases"] = 1
    params["package"]["margin"] = -0.5
    params["replay"]["initial_weeks"] = 2
    params["retrain"]["ready_timeout"] = 30
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    env = {
        "RECOPS_WORKSPACE": str(ws),
        "RECOPS_REPRO_CMD": f"{sys.executable} {TINY_REPRO}",
        "RECOPS_SERVE_CMD": READY,
        "BENTOML_DO_NOT_TRACK": "True",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        bag = DagBag(dag_folder=str(DAGS))
        assert bag.import_errors == {}
        told = Story(ws, bag.dags)
        try:
            yield told
        finally:
            served = _read(ws / "artifacts" / "serving" / "current.json")
            if served:  # the stand-in server the loop deployed: stop it, nothing else
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(served["pid"], signal.SIGTERM)


def test_a_corrupted_batch_is_quarantined_and_nothing_downstream_runs(story):
    before, seen = story.step("initial"), story.step("corrupt")
    assert before["ingest"]["events"] == [DATA]
    assert seen["ingest"]["tasks"] == {"find": "success", "append": "skipped"}
    assert seen["ingest"]["events"] == []  # no `data` event: the monitor is not scheduled
    assert seen["ledger"] == ["week-00"]
    report = story.ws / "quarantine" / "week-01-corrupt" / "report.md"
    assert report.is_file() and "rejected" in report.read_text()
    assert seen["monitor"]["tasks"]["signal"] == "skipped" and seen["monitor"]["events"] == []
    assert seen["lineage"] is None and seen["bentos"] == []


def test_a_clean_batch_without_drift_triggers_no_retrain(story):
    seen = story.step("clean")
    assert seen["ingest"]["events"] == [DATA] and seen["ledger"] == ["week-00", "week-01"]
    assert seen["monitor"]["tasks"] == {"assess": "success", "signal": "skipped"}
    assert seen["monitor"]["events"] == []  # no `drift` event: no retrain
    assert seen["decision"]["status"] == "no_drift", seen["decision"]["reasons"]
    assert (story.ws / "artifacts" / "monitoring" / "week-01" / "report.html").stat().st_size
    assert seen["lineage"] is None and seen["bentos"] == []


def test_a_shifted_batch_retrains_once_and_the_blessed_model_is_the_champion(story):
    seen = story.step("shift")
    assert seen["monitor"]["events"] == [DRIFT]
    retrain = seen["retrain"]
    assert retrain["state"] == "success", retrain["tasks"]
    assert retrain["tasks"] == dict.fromkeys(
        ("new_data_version", "repro", "deploy", "record"), "success"
    )
    assert retrain["events"] == [MODEL]
    assert len(seen["lineage"]["runs"]) == 1 and len(seen["bentos"]) == 1
    blessing, serving = seen["blessing"], seen["serving"]
    assert blessing["blessed"] and blessing["released"]["bento"]
    # the newest Bento (the package stage's champion) is what is served, and it answers
    assert seen["latest"] == seen["bentos"][0]
    assert (
        serving["bento"] == blessing["released"]["bento"] == f"recops_recommender:{seen['latest']}"
    )
    assert is_ready(serving["port"])
    version = next(iter(seen["lineage"]["runs"]))
    assert serving["data_version"] == version
    assert seen["lineage"]["runs"][version]["ledger"][-1] == "week-02-shift-new-items"
    card = json.loads((Path(serving["bundle"]) / "card.json").read_text())
    assert card["blessing"]["blessed"] and card["version"] == serving["bento"]


def test_the_same_data_version_twice_does_nothing(story):
    first, seen = story.step("shift"), story.step("again")
    assert seen["retrain"]["tasks"] == {
        "new_data_version": "success",
        "repro": "skipped",
        "deploy": "skipped",
        "record": "skipped",
    }
    assert seen["retrain"]["events"] == []
    assert seen["lineage"] == first["lineage"] and seen["bentos"] == first["bentos"]
    assert seen["serving"] == first["serving"]


def test_a_new_server_that_never_gets_ready_leaves_the_old_champion_serving(story):
    before, seen = story.step("again"), story.step("never_ready")
    old = before["serving"]
    retrain = seen["retrain"]
    assert retrain["tasks"]["repro"] == "success" and seen["blessing"]["blessed"]
    # release tags are content digests, not ordered: the new Bento is the one not there before
    added = sorted(set(seen["bentos"]) - set(before["bentos"]))
    assert len(seen["bentos"]) == 2 and added == [seen["latest"]]  # released ...
    assert f"recops_recommender:{seen['latest']}" != old["bento"]  # ... but never switched to
    assert retrain["tasks"]["deploy"] == "failed" and retrain["state"] == "failed"
    assert MODEL not in retrain["events"]
    assert seen["serving"] == old and is_ready(old["port"])  # the old one still serves
    assert retrain["tasks"]["record"] == "success"  # lineage records what was trained
    entry = max(seen["lineage"]["runs"].values(), key=lambda run: len(run["ledger"]))
    assert entry["ledger"][-1] == "week-03"
    assert entry["serving"] == old["bento"] and entry["released"] == seen["blessing"]["released"]
    assert retrain["tries"]["deploy"] == 2  # tried, retried, then failed
    # the failure callback writes its line once, when the task finally fails
    (line,) = [line for line in seen["failures"] if "recops_retrain.deploy" in line]
    assert "NotReady" in line and f"{old['bento']} keeps serving" in line
