"""Airflow in a temporary home (SQLite), set before anything imports airflow."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

_HOME = tempfile.mkdtemp(prefix="recops-airflow-")
atexit.register(shutil.rmtree, _HOME, True)  # the metadata DB and logs of this session
os.environ["AIRFLOW_HOME"] = _HOME
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_HOME}/airflow.db"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(
    os.path.dirname(__file__), "..", "..", "dags"
)


@pytest.fixture(scope="session")
def airflow_db():
    """The metadata tables in the temporary home (SQLite), once per session."""
    from airflow.utils import db

    db.initdb()
