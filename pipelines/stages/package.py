"""Stage `package`: bless the selected model or keep the champion; release a blessed one.

The selected model is blessed by ``evaluation.blessing.bless``: absolute floors, and with
a champion, the gate stage's paired comparison on the newest events (both as served; the
margin applies to the interval's lower bound) with its cold slices. The decision, both
numbers, the cases and the interval go to ``artifacts/release/blessing.json``. A blessed
model (the train stage's fit on all data) is bundled with its catalogue, users, its
``NowBlend`` and the model card, saved to the BentoML model store in ``.bentoml/`` and
built into a Bento; an unblessed one, or a failure at any step, leaves the champion.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pipelines.core.config import Params
from pipelines.core.io import sha256_file, tracked_md5, write_json
from pipelines.core.paths import PROJECT
from pipelines.evaluation.blessing import BlessingRule, bless, coldstart_slices
from pipelines.inference import release
from pipelines.inference.bundle import write_bundle
from pipelines.inference.now import NowBlend
from pipelines.stages import cli

log = logging.getLogger(__name__)


SERVICE = "services.recommender:RecommenderService"
# only what serving imports: no stages, training, ingestion or validation code
BENTO_INCLUDE = [
    "services/*.py",
    "services/requirements.txt",
    "pipelines/__init__.py",
    "pipelines/core/*.py",
    "pipelines/data/__init__.py",
    "pipelines/data/privacy.py",
    *(f"pipelines/{layer}/*.py" for layer in ("features", "models", "evaluation", "inference")),
]
BENTO_EXCLUDE = ["**/__pycache__/"]


READS = {
    "selection": PROJECT.selection,
    "metrics": PROJECT.eval_metrics,
    "coldstart": PROJECT.coldstart_metrics,
    "models": PROJECT.models_dir,
    "features": PROJECT.features_dir,
    "split": PROJECT.split_dir,
    "embeddings": PROJECT.item_embeddings,
    "data_dvc": PROJECT.data_dvc,
    "gate": PROJECT.gate,
    "blend": PROJECT.gate_blend,
}
WRITES = {"out": PROJECT.release_dir, "bentoml_home": PROJECT.bentoml_home}


def data_hash(data_dvc: Path) -> str | None:
    """The md5 DVC recorded for data/ (what the model was trained on)."""
    return tracked_md5(data_dvc)


def release_version(winner: str, model_dir: Path, data: str | None) -> str:
    """The release's version: a digest of the model's files and the data it was trained on.

    The same model on the same data gets the same version on every machine, so a fresh
    clone's `make run` reproduces blessing.json (and dvc.lock).
    """
    digest = hashlib.sha256(f"{winner}\n{data}\n".encode())
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(model_dir).as_posix()}\n{sha256_file(path)}\n".encode())
    return digest.hexdigest()[:16]


def git_commit(root: Path) -> str | None:
    """HEAD's commit, with ``-dirty`` when tracked files differ from it (read-only git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}-dirty" if dirty else head


def run(
    params: Params,
    selection: Path,
    metrics: Path,
    coldstart: Path,
    models: Path,
    features: Path,
    split: Path,
    embeddings: Path,
    data_dvc: Path,
    gate: Path,
    blend: Path,
    out: Path,
    bentoml_home: Path,
) -> dict[str, Any]:
    settings, serve = params.package, params.serve
    coldstart_settings = params.coldstart
    winner = json.loads(selection.read_text())["winner"]
    measured = json.loads(metrics.read_text())[winner]
    cold = json.loads(coldstart.read_text()) if coldstart.exists() else {}
    new_items, new_users = coldstart_slices(
        cold, winner, coldstart_settings.item_k, coldstart_settings.user_k
    )
    rule = BlessingRule(
        floors=dict(settings.floors),
        margin=settings.margin,
        coldstart_tolerance=settings.coldstart_tolerance,
        require_coldstart=settings.require_coldstart,
        k=params.evaluate.k,
    )
    evidence = json.loads(gate.read_text())
    comparison = evidence.get("comparison") if not evidence.get("why") else None
    decision = bless(measured["valid"], comparison, rule, evidence.get("why") or "")

    release.use_home(bentoml_home)
    current = release.champion()
    record: dict[str, Any] = {
        **decision.to_dict(),
        "challenger": {"model": winner, "valid": measured["valid"]},
        "champion": None if current is None else {"model": current.model, "bento": current.bento},
        "gate": evidence,
        "released": None,
    }
    if decision.blessed:
        version = release_version(winner, models / winner, data_hash(data_dvc))
        if release.model_exists(version):
            # the same model blessed again (its Bento was removed): the time tells them apart
            version += "-" + dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
        card = {
            "name": winner,
            "version": f"{release.MODEL_NAME}:{version}",
            "metrics": {**measured, "coldstart": {"new_items": new_items, "new_users": new_users}},
            "data_hash": data_hash(data_dvc),
            "commit": git_commit(PROJECT.root),
            "blessing": decision.to_dict(),
            "gate": evidence,
            # the default of /recommend's exclude_seen: the protocol the model was judged by
            "serve": {**serve.model_dump(), "exclude_seen": params.evaluate.mask_history},
            # recent popularity by gap bucket, chosen on validation (stage gate)
            "now_blend": NowBlend.from_dict(json.loads(blend.read_text())).to_dict(),
        }
        with tempfile.TemporaryDirectory(prefix="recops-bundle-") as staging:
            bundle = Path(staging) / "bundle"
            write_bundle(bundle, models / winner, features, split, embeddings, card)
            model_tag, bento_tag = release.publish(
                bundle,
                version=version,
                # BentoML metadata holds basic types only (no None): the evidence travels as
                # JSON text, and what is unknown (no git commit yet, say) says so
                metadata={
                    **{
                        k: "unknown" if card.get(k) is None else card[k]
                        for k in ("name", "data_hash", "commit")
                    },
                },
                labels={"model": winner},
                service=SERVICE,
                build_ctx=PROJECT.root,
                include=BENTO_INCLUDE,
                exclude=BENTO_EXCLUDE,
            )
        record["released"] = {"model": model_tag, "bento": bento_tag}
    write_json(record, out / PROJECT.blessing.name)
    verdict = "blessed" if decision.blessed else "not blessed; the champion stays"
    print(f"{winner}: {verdict}")
    for reason in decision.reasons:
        print(f"  - {reason}")
    return {"winner": winner, "blessed": decision.blessed, "released": record["released"]}


def main(argv: list[str] | None = None) -> int:
    return cli.main("package", __doc__, run, READS, WRITES, argv)


if __name__ == "__main__":
    sys.exit(main())
