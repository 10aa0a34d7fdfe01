"""The one tracking sink: MLflow. The driver opens (or, on resume, re-opens) the run and closes it; inside
training only rank 0 logs, every other rank holds a no-op logger.

Tracking never stops training: a failed MLflow call is counted and warned about, and the count is logged as
`tracking/failed_calls` once MLflow answers again.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

log = logging.getLogger(__name__)

RUN_NAME_TAG = "ray.run_name"  # links a Ray Train run (and its checkpoints) to exactly one MLflow run


def _experiment_id(client: MlflowClient, name: str, artifact_root: str, tracking_uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    # A local store keeps artifacts in a folder we choose; a server decides its own (proxied) artifact store.
    location = Path(artifact_root).as_uri() if tracking_uri.startswith("sqlite:") else None
    return client.create_experiment(name, artifact_location=location)


def open_run(tracking_uri: str, experiment: str, artifact_root: str, run_name: str, params: dict[str, Any],
             tags: dict[str, str]) -> str:
    """The MLflow run for this Ray Train run name: the existing one when resuming, else a new one with params."""
    client = MlflowClient(tracking_uri)
    experiment_id = _experiment_id(client, experiment, artifact_root, tracking_uri)
    existing = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'",
                                  max_results=1)
    if existing:
        run_id = existing[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        resumes = int(existing[0].data.tags.get("resumes", "0")) + 1
        client.set_tag(run_id, "resumes", str(resumes))
        return run_id
    run = client.create_run(experiment_id, run_name=run_name, tags={RUN_NAME_TAG: run_name, **tags})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in sorted(params.items())])
    return run.info.run_id


def close_run(tracking_uri: str, run_id: str, status: str) -> None:
    MlflowClient(tracking_uri).set_terminated(run_id, status=status)


class RunLogger:
    """Logs to one MLflow run when `active` (rank 0); does nothing otherwise."""

    def __init__(self, tracking_uri: str, run_id: str, active: bool):
        self.run_id = run_id
        self.active = active
        self.failed_calls = 0
        self._client = MlflowClient(tracking_uri) if active else None

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> None:
        if not self.active:
            return
        try:
            getattr(self._client, method)(self.run_id, *args, **kwargs)
        except Exception as error:  # noqa: BLE001 - any tracking failure must not end training
            self.failed_calls += 1
            log.warning("MLflow %s failed (%d failed calls so far): %s", what, self.failed_calls, error)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.failed_calls:
            metrics = {**metrics, "tracking/failed_calls": float(self.failed_calls)}
        now = int(time.time() * 1000)
        self._call("metrics", "log_batch", metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        self._call(f"image {key}", "log_image", image, key=key, step=step)

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        self._call(f"artifact {local_path}", "log_artifact", str(local_path), artifact_path)

    def log_file_bytes(self, data: bytes, name: str, artifact_path: str | None = None) -> None:
        if not self.active:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            self.log_artifact(path, artifact_path)
