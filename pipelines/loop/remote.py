"""Artifacts between hosts: the project's DVC remote, pushed to after training, pulled from.

Git carries the code and the DVC metadata (``dvc.yaml``, ``dvc.lock``, ``data.dvc``); the
remote carries what they name: the data snapshot and every cached stage output (features,
embeddings, models, ...). The project's ``.dvc/config`` names a default remote, ``local``,
a folder under ``.cache/`` (git-ignored), so ``push`` works out of the box; any DVC remote
replaces it by setting (``dvc remote add -d --local shared s3://bucket/recops`` writes the
git-ignored ``.dvc/config.local``), and ``$RECOPS_DVC_REMOTE`` picks one by name for the
loop. docs/scale-out.md says how a second host is set up.

- ``push(layout)``: ``dvc push`` of everything the workspace's DVC files name (the retrain
  DAG calls it after ``dvc repro``: what it trained, and the data it trained on).
- ``pull(layout)``: ``dvc pull --allow-missing`` of the outputs **missing** here (a worker
  that does not share the project's disk; the retrain DAG calls it before ``dvc repro``).
  An output present here is left alone even when it differs from the lock (a run that was
  killed half-way): ``dvc repro`` decides what is stale, and a pull never overwrites it.

Both are no-ops, saying so, in a workspace that is not a DVC project (the DAG tests) or
names no remote (a replay copy); a remote that fails raises ``RemoteError`` with DVC's
own last line.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipelines.core.io import read_dvc_file
from pipelines.core.paths import Layout

# this interpreter's dvc (as `make` puts it on PATH), else whichever dvc is on PATH
_HERE = Path(sys.executable).with_name("dvc")
DVC = str(_HERE) if _HERE.exists() else "dvc"


log = logging.getLogger(__name__)

REMOTE_ENV = "RECOPS_DVC_REMOTE"  # a configured remote's name; unset = the default one
LOCK = "dvc.lock"


class RemoteError(RuntimeError):
    """The DVC remote could not be used; the message is one line saying which and why."""


def _dvc(layout: Layout, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(
        [DVC, *args], cwd=layout.root, capture_output=True, text=True, check=False, env=env
    )


def _last_line(done: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in (done.stderr + "\n" + done.stdout).splitlines()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or [line for line in lines if line] or ["no output"])[-1]


def remote_of(layout: Layout, remote: str | None = None) -> tuple[str, str] | None:
    """(name, url) of the remote to use: ``remote``, ``$RECOPS_DVC_REMOTE`` or the default.

    None when the workspace names no remote at all; an unknown name is an error.
    """
    # `dvc config --list`: one key=value a line, every level merged (config.local included);
    # `dvc remote list` wraps long URLs to the terminal's width
    done = _dvc(layout, "config", "--list")
    if done.returncode != 0:
        raise RemoteError(f"dvc config --list in {layout.root} failed: {_last_line(done)}")
    settings = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    remotes = {
        key[len("remote.") : -len(".url")]: value
        for key, value in settings.items()
        if key.startswith("remote.") and key.endswith(".url")
    }
    name = remote or os.environ.get(REMOTE_ENV) or settings.get("core.remote") or None
    if name is None:
        return None
    if name not in remotes:
        known = ", ".join(sorted(remotes)) or "none"
        raise RemoteError(f"no DVC remote {name!r} in {layout.root} (configured: {known})")
    return name, remotes[name]


def _skipped(why: str) -> dict[str, Any]:
    log.info("DVC remote: %s; nothing to transfer", why)
    return {"skipped": why}


def push(layout: Layout, remote: str | None = None) -> dict[str, Any]:
    """``dvc push``: the data snapshot and every cached output the DVC files name."""
    if not layout.is_dvc_project:
        return _skipped(f"{layout.root} is not a DVC project")
    chosen = remote_of(layout, remote)
    if chosen is None:
        return _skipped(f"{layout.root} names no DVC remote")
    name, url = chosen
    done = _dvc(layout, "push", "-r", name)
    if done.returncode != 0:
        raise RemoteError(f"dvc push to {name} ({url}) failed: {_last_line(done)}")
    summary = _last_line(done)
    log.info("dvc push to %s (%s): %s", name, url, summary)
    return {"remote": name, "url": url, "summary": summary}


def outputs(layout: Layout) -> list[str]:
    """Every cached output the workspace's DVC files name (data.dvc's, dvc.lock's), in order."""
    paths: list[str] = []
    for dvc_file in sorted(p for p in layout.root.glob("*.dvc") if p.is_file()):
        for out in read_dvc_file(dvc_file).get("outs") or []:
            paths.append(out["path"])
    for stage in (read_dvc_file(layout.root / LOCK).get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if out.get("md5") or out.get("hash"):  # cache: false outputs have no copy
                paths.append(out["path"])
    return list(dict.fromkeys(paths))


def missing(layout: Layout) -> list[str]:
    return [path for path in outputs(layout) if not (layout.root / path).exists()]


def pull(layout: Layout, remote: str | None = None) -> dict[str, Any]:
    """``dvc pull`` of the outputs missing here; those present are left as they are."""
    if not layout.is_dvc_project:
        return _skipped(f"{layout.root} is not a DVC project")
    wanted = missing(layout)
    if not wanted:
        return _skipped("every output is here already")
    chosen = remote_of(layout, remote)
    if chosen is None:
        raise RemoteError(
            f"{len(wanted)} output(s) missing in {layout.root} ({', '.join(wanted[:3])}...) "
            "and no DVC remote to pull them from: `dvc remote add -d NAME URL`"
        )
    name, url = chosen
    done = _dvc(layout, "pull", "--allow-missing", "-r", name, *wanted)
    if done.returncode != 0:
        raise RemoteError(f"dvc pull from {name} ({url}) failed: {_last_line(done)}")
    summary = _last_line(done)
    still = missing(layout)
    log.info("dvc pull from %s (%s): %s; still missing: %s", name, url, summary, still or "none")
    return {"remote": name, "url": url, "pulled": wanted, "missing": still, "summary": summary}
