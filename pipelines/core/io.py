"""Atomic file writes: a stage either leaves a complete file or none.

Every writer in the project goes through ``atomic_path``: it fills a temporary
file beside the target, flushes it to disk and renames it into place, so a
crash, a kill or a bad input never leaves half a file for DVC to hash or a
later run to load. ``replaced_dir`` does the same for a whole folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"  # folders being filled; one left behind is from a killed run
RETIRED_PREFIX = ".retired-"  # the previous folder while a new one is moved in
STALE_AFTER_SECONDS = 60.0  # younger staging folders may belong to a run still going


class PublishError(OSError):
    """A new output could not be moved into place; the message says what is where."""


_publish_guard: Callable[[], bool] = lambda: True  # noqa: E731


def set_publish_guard(guard: Callable[[], bool]) -> None:
    """Install the check ``replaced_dir`` makes before publishing (the stage CLI's owner check)."""
    global _publish_guard
    _publish_guard = guard


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed over it when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temp)
        _fsync(Path(temp))
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: Path) -> Iterator[IO[bytes]]:
    """A binary handle whose bytes replace ``path`` only when the block succeeds."""
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        yield handle


def write_torch(obj: Any, path: Path) -> None:
    """``torch.save`` through a handle, atomically. Given a path, torch names the archive's
    records after the file, which here is a random temporary name: the same weights then
    gave other bytes, and another md5 in dvc.lock, on every run."""
    import torch  # heavy; only the writers of model files need it

    with atomic_write(path) as handle:
        torch.save(obj, handle)


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as temp:
        frame.to_parquet(temp, index=False)


def write_json(payload: Any, path: Path) -> None:
    write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", path)


def write_text(text: str, path: Path) -> None:
    with atomic_write(path) as handle:
        handle.write(text.encode("utf-8"))


def write_npy(array: np.ndarray, path: Path) -> None:
    with atomic_write(path) as handle:
        np.save(handle, array)


def remove_stale_staging(parent: Path, name: str, older_than: float = STALE_AFTER_SECONDS) -> None:
    """Delete staging folders of ``name`` that killed runs left in ``parent``."""
    if not parent.is_dir():
        return
    now = time.time()
    for prefix in (STAGING_PREFIX, RETIRED_PREFIX):
        for folder in parent.glob(f"{prefix}{name}.*"):
            if folder.is_dir() and now - folder.stat().st_mtime > older_than:
                log.info("removing %s, left by an interrupted run", folder)
                shutil.rmtree(folder, ignore_errors=True)


def swap_in(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target``, keeping the old ``target`` until the new one is in.

    The old folder is renamed aside, the new one renamed in, and only then is
    the old one deleted; if the second rename fails the old folder is put back.
    """
    retired = None
    if target.exists():
        retired = target.parent / f"{RETIRED_PREFIX}{target.name}.{os.getpid()}"
        shutil.rmtree(retired, ignore_errors=True)
        target.rename(retired)
    try:
        staging.rename(target)
    except OSError as err:
        if retired is not None:
            retired.rename(target)
        raise PublishError(
            f"could not move the new {target.name} into place ({err}); "
            f"{target} still holds the previous outputs"
        ) from err
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


@contextmanager
def replaced_dir(target: Path) -> Iterator[Path]:
    """A staging folder that replaces ``target`` whole when the block succeeds.

    A failure anywhere in the block leaves ``target`` as it was, and the
    staging folder is removed; staging folders of killed runs are cleaned
    when the next run of the same output starts.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target.parent, target.name)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{STAGING_PREFIX}{target.name}."))
    try:
        yield staging
        if not _publish_guard():
            raise PublishError(
                f"not publishing {target}: the process that started this run is gone, "
                "so a newer run owns the outputs"
            )
        swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -- checksums: a file damaged in place keeps its size and time stamp, so DVC's cheap
# -- check passes; a recorded digest catches it when the file is loaded
CHECKSUMS = "checksums.json"


class CorruptOutputError(OSError):
    """A file no longer matches the checksum recorded when it was written."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksums(folder: Path, names: list[str]) -> None:
    """Record the SHA-256 of ``names`` (files in ``folder``) in ``folder/checksums.json``."""
    write_json({name: sha256_file(folder / name) for name in names}, folder / CHECKSUMS)


def verify_checksum(path: Path) -> None:
    """Check ``path`` against the checksum recorded beside it, if one was recorded."""
    record = path.parent / CHECKSUMS
    if not record.exists():
        return
    expected = json.loads(record.read_text()).get(path.name)
    if expected is not None and sha256_file(path) != expected:
        raise CorruptOutputError(
            f"{path} is damaged: its content no longer matches the checksum recorded when it "
            f"was written. Restore it with `dvc checkout` (or re-run `dvc repro --force` for "
            "the stage that writes it)."
        )


# ---- DVC's own files (data.dvc, dvc.lock) -----------------------------------------------


def read_dvc_file(path: Path) -> dict[str, Any]:
    """A DVC file (``*.dvc``, ``dvc.lock``) as plain data; {} when absent or empty."""
    import yaml  # DVC's files are YAML; params.yaml is read by core.config only

    path = Path(path)
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def tracked_md5(dvc_file: Path) -> str | None:
    """The md5 a ``*.dvc`` file recorded for its (first) output; None when there is none."""
    outs = read_dvc_file(dvc_file).get("outs") or [{}]
    return outs[0].get("md5")
