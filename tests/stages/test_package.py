"""Stage `package`: blessing decides, only a blessed model reaches the store, a crash keeps
the champion. Runs the stage in a child process so BentoML's store is a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipelines.core.paths import PROJECT
from pipelines.stages import package

DRIVER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    from pipelines.core.config import Params
    from pipelines.inference import release
    from pipelines.core.io import write_json
    from pipelines.stages import package
    from tests.inference.tiny import FILMS, build_artifacts

    root, home = Path(sys.argv[1]), Path(sys.argv[2])
    vectors = np.random.default_rng(0).normal(size=(len(FILMS), 384)).astype("float32")
    artifacts = build_artifacts(root, vectors)

    def stage():
        return package.run(
            Params(), selection=artifacts / "selection/selection.json",
            metrics=artifacts / "eval/metrics.json", coldstart=artifacts / "coldstart/metrics.json",
            models=artifacts / "models", features=artifacts / "features",
            split=artifacts / "split", embeddings=artifacts / "embeddings/items.npy",
            data_dvc=root / "data.dvc", gate=artifacts / "gate/gate.json",
            blend=artifacts / "gate/blend.json", out=artifacts / "release", bentoml_home=home,
        )

    def interval(mean):
        return {"mean": mean, "low": mean - 0.01, "high": mean + 0.01}

    def set_gate(low):
        # the gate stage evidence: no champion yet (None), or a paired difference
        if low is None:
            evidence = {"comparison": None, "why": "no champion yet: the floors alone decide"}
        else:
            known = {
                "cases": 900, "users": 60, "challenger": {"ndcg@10": interval(0.08 + low)},
                "champion": {"ndcg@10": interval(0.08)},
                "difference": {"mean": low + 0.01, "low": low, "high": low + 0.02,
                               "p_value": 0.2},
            }
            evidence = {"comparison": {"known users": known}, "why": None}
        write_json(evidence, artifacts / "gate/gate.json")
        write_json({"weights": [0.1, 0.5, 0.9, 0.9]}, artifacts / "gate/blend.json")

    def state():
        import bentoml
        return {
            "champion": release.champion().bento,
            "bundle": str(release.champion().path),
            "models": sorted(str(m.tag) for m in bentoml.models.list()),
            "bentos": sorted(str(b.tag) for b in bentoml.bentos.list()),
            "blessing": json.loads((artifacts / "release/blessing.json").read_text()),
        }

    out = {}
    set_gate(None); stage(); out["first"] = state()
    set_gate(-0.05); stage(); out["worse"] = state()

    def crash(*args, **kwargs):
        raise RuntimeError("injected crash while building the Bento")

    release.build_bento = crash
    set_gate(0.01)
    try:
        stage()
        out["crash_raised"] = False
    except RuntimeError:
        out["crash_raised"] = True
    out["crashed"] = state()
    print("RESULT " + json.dumps(out))
    """
)


def test_help_lists_what_the_stage_reads_and_writes(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        package.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "artifacts/selection/selection.json" in text and "artifacts/release" in text


def test_data_hash_and_commit(tmp_path: Path) -> None:
    (tmp_path / "data.dvc").write_text("outs:\n- md5: abc.dir\n  path: data\n")
    assert package.data_hash(tmp_path / "data.dvc") == "abc.dir"
    assert package.data_hash(tmp_path / "missing.dvc") is None
    assert package.git_commit(tmp_path) is None  # not a repository


@pytest.mark.integration
def test_bless_release_refuse_and_survive_a_crash(tmp_path: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "home"), "BENTOML_DO_NOT_TRACK": "True"}
    env["PYTHONPATH"] = str(PROJECT.root)
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path / "project"), str(tmp_path / "home")],
        cwd=PROJECT.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))

    first = result["first"]
    assert first["blessing"]["blessed"] and first["blessing"]["champion"] is None
    assert len(first["models"]) == 1 and first["bentos"] == [first["champion"]]
    assert first["blessing"]["released"]["bento"] == first["champion"]

    card = json.loads((Path(first["bundle"]) / "card.json").read_text())
    assert card["now_blend"]["weights"] == [0.1, 0.5, 0.9, 0.9]  # the gate's blend ships
    worse = result["worse"]  # the paired interval's lower bound -0.05 < the margin -0.01
    assert not worse["blessing"]["blessed"]
    assert any("shown worse" in reason for reason in worse["blessing"]["reasons"])
    assert worse["blessing"]["gate"]["comparison"]["known users"]["cases"] == 900
    assert worse["champion"] == first["champion"] and worse["models"] == first["models"]

    crashed = result["crashed"]  # better, but the Bento build fails
    assert result["crash_raised"]
    assert crashed["champion"] == first["champion"]
    assert crashed["models"] == first["models"] and crashed["bentos"] == first["bentos"]


def test_release_version_is_a_digest_of_the_model_and_its_data(tmp_path: Path) -> None:
    model = tmp_path / "models" / "ease"
    model.mkdir(parents=True)
    (model / "state.pt").write_bytes(b"weights")
    (model / "model.json").write_text("{}")
    first = package.release_version("ease", model, "abc.dir")

    # the same files on another machine (another folder) give the same version: dvc.lock
    # stays the same on a fresh clone
    copy = tmp_path / "elsewhere" / "ease"
    copy.mkdir(parents=True)
    for path in model.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    assert package.release_version("ease", copy, "abc.dir") == first
    assert len(first) == 16

    assert package.release_version("ease", model, "other.dir") != first
    assert package.release_version("itemknn", model, "abc.dir") != first
    (model / "state.pt").write_bytes(b"other weights")
    assert package.release_version("ease", model, "abc.dir") != first
