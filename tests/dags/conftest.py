"""Airflow in a temporary home (SQLite), set before anything imports airflow."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

_HOME = tempfile.mkdtemp(prefix="recops-airflow-")
atexit.register(shutil.rmtree, _HOME, True)  # the metadata DB and logs of this session
os.environ["AIRFLOW_HOME"] = _HOME
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_HOME}/airflow.db"
DAGS = Path(__file__).resolve().parents[2] / "dags"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
# Airflow's components put the DAG bundle's folder on sys.path (BundleDagBag), so a DAG file
# imports dags/common.py by name; a plain DagBag in a test process does not, so we do
if str(DAGS) not in sys.path:
    sys.path.append(str(DAGS))


@pytest.fixture(scope="session")
def airflow_db():
    """The metadata tables in the temporary home (SQLite), once per session."""
    from airflow.utils import db

    db.initdb()
