"""Atomic file writes: a stage either leaves a complete file or none.

Each writer fills a temporary file beside the target and renames it into
place, so a crash or a bad input never leaves half a file for DVC to hash.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temp))
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    _atomic(path, lambda temp: frame.to_parquet(temp, index=False))


def write_json(payload: Any, path: Path) -> None:
    text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
    _atomic(path, lambda temp: temp.write_text(text))


def write_text(text: str, path: Path) -> None:
    _atomic(path, lambda temp: temp.write_text(text))


def write_npy(array: np.ndarray, path: Path) -> None:
    def _save(temp: Path) -> None:
        with open(temp, "wb") as handle:
            np.save(handle, array)

    _atomic(path, _save)


@contextmanager
def replaced_dir(target: Path) -> Iterator[Path]:
    """A staging folder that replaces ``target`` whole when the block succeeds.

    A failure anywhere in the block leaves ``target`` as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        yield staging
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
