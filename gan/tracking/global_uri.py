"""MLflow's process-wide tracking URI, set for one call and put back as it was.

Some MLflow calls resolve `models:/` and `runs:/` through the global URI only, not a client's. Setting it for good
leaks: `mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI, which every later job in the process and every
subprocess reads as its default (gan/config_fields.py), and putting back `get_tracking_uri()` where none was set
sets MLflow's own default, sqlite:///mlflow.db in the working directory (one such store had been committed).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import mlflow


@contextlib.contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None  # None: unset again after
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
