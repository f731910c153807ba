"""A replay workspace: a copy of the project that the loop can train, package and serve in.

``dvc repro`` in a **replay workspace** is the real pipeline on the replayed stream: a
copy of the project's pipeline code, ``dvc.yaml`` and ``params.yaml`` (with the replay's
overrides), with its own ``data/``, ``artifacts/``, ``.bentoml/`` and DVC state, so a
replay never touches the project's data, models, ``data.dvc`` or ``dvc.lock``. It is a
``Layout`` like the project's, so every loop step works in it unchanged.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pipelines.core.paths import Layout
from pipelines.loop import deploy

# what a replay workspace copies from the project: the code `dvc repro` runs, the Bento's
# serving code, the pipeline definition (params.yaml is written, with the overrides)
PROJECT_FILES = ("dvc.yaml",)
PROJECT_FOLDERS = ("pipelines", "services")


def prepare_workspace(project: Layout, root: Path, params_yaml: str, dvc: str = "dvc") -> Layout:
    """A fresh replay workspace at ``root``: the project's code and pipeline, ``params_yaml``,
    the embedding cache, and its own DVC project (no git). An old one is removed first
    (after stopping the server it may still run)."""
    layout = Layout(Path(root))
    if layout.root.exists():
        stop_serving(layout)
        shutil.rmtree(layout.root)
    layout.root.mkdir(parents=True)
    for name in PROJECT_FILES:
        shutil.copy2(project.root / name, layout.root / name)
    for name in PROJECT_FOLDERS:
        shutil.copytree(
            project.root / name, layout.root / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    # content-addressed: reusing the project's vectors changes nothing but the time
    if project.embed_cache.is_dir():
        shutil.copytree(project.embed_cache, layout.embed_cache)
    layout.params.write_text(params_yaml)
    done = subprocess.run(
        [dvc, "init", "--no-scm", "--quiet"], cwd=layout.root, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"dvc init in {layout.root} failed: {(done.stderr or done.stdout).strip()}"
        )
    return layout


def stop_serving(layout: Layout) -> str | None:
    """Stop the server the layout's loop deployed (its own process group); its Bento tag."""
    served = deploy.current(layout.serving)
    if not served or not served.get("pid"):
        return None
    deploy.stop(int(served["pid"]))
    return served.get("bento")
