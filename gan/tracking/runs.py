"""The one tracking sink: MLflow. The driver opens (or, on resume, re-opens) the run and closes it; inside
training only rank 0 logs, every other rank holds a no-op logger.

Tracking never stops training. While the server is down, calls wait in memory (up to 10,000) behind the one being
retried by MLflow's HTTP client (7 retries with exponential backoff, about 4 minutes), so an outage shorter than
that loses nothing; a call that still fails is counted, warned about, and the count is logged as
`tracking/failed_calls` once MLflow answers again.
"""
from __future__ import annotations

import logging
import math
import queue
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from gan.config_fields import ConfigError

log = logging.getLogger(__name__)

RUN_NAME_TAG = "ray.run_name"  # links a Ray Train run (and its checkpoints) to exactly one MLflow run


def redact(uri: str) -> str:
    """The URI without a user:password part, for messages and logs."""
    parsed = urlparse(uri)
    if parsed.password is None and parsed.username is None:
        return uri
    return parsed._replace(netloc=f"***@{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")).geturl()


def check_tracking(uri: str) -> None:
    """Reject a tracking URI that cannot work before any training starts (MLflow's own client would retry for
    minutes first): a server that does not answer /health, or a sqlite file in a folder that does not exist."""
    import urllib.request

    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5).close()
        except Exception as error:  # noqa: BLE001 - refused, DNS, timeout, HTTP error: all mean "not usable"
            reason = getattr(error, "reason", None) or error
            raise ConfigError(f"--tracking-uri {redact(uri)}: MLflow server unreachable ({reason}); start it, fix the "
                              f"URI (or MLFLOW_TRACKING_URI), or pass --no-tracking") from None
    elif scheme == "sqlite":
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise ConfigError(f"--tracking-uri {uri}: folder {folder} does not exist; create it or point the URI at "
                              f"an existing folder")


# The kind of experiment this is, which MLflow's UI reads to choose its model-training view over its GenAI one
# (traces, judges, "Agent versions"). A kind someone set already is left alone. MLflow 3.17.2's UI reads the tag
# only while it hides its GenAI / Model training switch; with the switch shown, the URL's workflowType or the
# browser's last choice decides, so the links we print carry MODEL_TRAINING_VIEW.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def ui_link(tracking_uri: str, run_id: str) -> str:
    """The run's page in the MLflow UI, in the model-training view; for a local store, on `mlflow ui`'s default
    address."""
    experiment_id = MlflowClient(tracking_uri).get_run(run_id).info.experiment_id
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{redact(base)}/#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING_VIEW}"


def _experiment_id(client: MlflowClient, name: str, artifact_root: str, tracking_uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if not set(EXPERIMENT_KIND) & set(experiment.tags):  # made by an older version, or by hand
            for key, value in EXPERIMENT_KIND.items():
                client.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id
    # A local store keeps artifacts in a folder we choose; a server decides its own (proxied) artifact store.
    location = Path(artifact_root).as_uri() if tracking_uri.startswith("sqlite:") else None
    return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)


def open_run(tracking_uri: str, experiment: str, artifact_root: str, run_name: str, params: dict[str, Any],
             tags: dict[str, str], display_name: str = "", parent_run_id: str | None = None,
             count_resume: bool = True) -> str:
    """The MLflow run for this Ray Train run name: the existing one when resuming (counted in tag `resumes` unless
    re-opening is routine, as for a PBT trial after each pause), else a new one with params (nested under
    `parent_run_id` when given, as a sweep's trials are)."""
    client = MlflowClient(tracking_uri)
    experiment_id = (client.get_run(parent_run_id).info.experiment_id if parent_run_id
                     else _experiment_id(client, experiment, artifact_root, tracking_uri))
    existing = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'",
                                  max_results=1)
    if existing:
        run_id = existing[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        if not count_resume:
            return run_id
        resumes = int(existing[0].data.tags.get("resumes", "0")) + 1
        client.set_tag(run_id, "resumes", str(resumes))
        return run_id
    nested = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
    run = client.create_run(experiment_id, run_name=display_name or run_name,
                            tags={RUN_NAME_TAG: run_name, **nested, **tags})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in sorted(params.items())])
    return run.info.run_id


def set_run_status(tracking_uri: str, run_id: str, status: str, label: str) -> None:
    """End a run as FINISHED / FAILED / KILLED, with a readable `status` tag (e.g. 'stopped early', 'diverged')."""
    client = MlflowClient(tracking_uri)
    client.set_tag(run_id, "status", label)
    client.set_terminated(run_id, status=status)


def close_run(tracking_uri: str, run_id: str, status: str, failure: str = "") -> None:
    """Mark the run ended; if MLflow is unreachable now, say so instead of failing a run whose result is saved."""
    try:
        client = MlflowClient(tracking_uri)
        if failure:
            client.set_tag(run_id, "failure", failure[:5000])
        client.set_terminated(run_id, status=status)
    except Exception as error:  # noqa: BLE001 - the checkpoints hold the result; tracking must not end the job
        log.warning("could not mark MLflow run %s %s at %s: %s", run_id, status, redact(tracking_uri), error)


# How long the logger thread holds metrics to send them in one call, and the most MLflow takes in one log_batch.
METRIC_BATCH_SECONDS = 5.0
MLFLOW_BATCH_LIMIT = 1000


@dataclass(frozen=True)
class _Metrics:
    """One log_metrics call, queued as data so the logger thread can join consecutive ones into one batch."""
    values: dict[str, float]
    step: int
    timestamp_ms: int


class RunLogger:
    """Logs to one MLflow run when `active` (rank 0); does nothing otherwise.

    Calls are queued and made by one background thread, so a training step never waits on the tracking server
    (an HTTP round trip, a sqlite commit, PNG encoding of a grid). `close()` delivers what is queued."""

    def __init__(self, tracking_uri: str, run_id: str | None, active: bool, queue_size: int = 10_000):
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self.active = bool(active and run_id)
        self.failed_calls = 0
        self.dropped_calls = 0
        self.cpu_seconds = 0.0  # CPU time the logger thread spent making calls: what tracking costs the machine
        self._logged_up_to: dict[str, int] = {}  # per metric, the last step the run held before a restore
        if self.active:
            self._client = MlflowClient(tracking_uri)
            self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
            self._thread = threading.Thread(target=self._deliver, name="mlflow-logger", daemon=True)
            self._thread.start()

    def _submit(self, what: str, call: Callable[[], Any] | _Metrics) -> bool:
        """Queue a call for the logger thread; False when it will not be made (inactive, or the queue is full)."""
        if not self.active:
            return False
        try:
            self._queue.put_nowait((what, call))
            return True
        except queue.Full:
            self.dropped_calls += 1
            log.warning("MLflow queue full: dropped %s (%d dropped so far)", what, self.dropped_calls)
            return False

    def _deliver(self) -> None:
        """Makes the queued calls in order. Metrics wait up to METRIC_BATCH_SECONDS to go out together in one
        log_batch (one store transaction, not one per log window), and always before the next other call, so
        every series still arrives in order."""
        pending: list[Metric] = []
        deadline = 0.0
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()) if pending else None)
            except queue.Empty:
                item = ("metrics due", None)
            if item is not None and isinstance(metrics := item[1], _Metrics):
                if not pending:
                    deadline = time.monotonic() + METRIC_BATCH_SECONDS
                pending += [Metric(key, float(value), metrics.timestamp_ms, metrics.step)
                            for key, value in self.not_yet_logged(metrics.values, metrics.step).items()]
                continue
            if pending:
                batch, pending = pending, []
                self._make("metrics", lambda: self._log_metric_batch(batch))
            if item is None:
                return
            if item[1] is not None:
                self._make(*item)

    def _make(self, what: str, call: Callable[[], Any]) -> None:
        started = time.thread_time()
        try:
            call()
        except Exception as error:  # noqa: BLE001 - any tracking failure must not end training
            self.failed_calls += 1
            log.warning("MLflow %s failed (%d failed calls so far): %s", what, self.failed_calls, error)
        self.cpu_seconds += time.thread_time() - started

    def _log_metric_batch(self, batch: list[Metric]) -> None:
        for start in range(0, len(batch), MLFLOW_BATCH_LIMIT):
            self._client.log_batch(self.run_id, metrics=batch[start:start + MLFLOW_BATCH_LIMIT])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        lost = self.failed_calls + self.dropped_calls
        if lost:
            metrics = {**metrics, "tracking/failed_calls": float(lost)}
        self._submit("metrics", _Metrics(metrics, step, int(time.time() * 1000)))

    def not_yet_logged(self, metrics: dict[str, float], step: int) -> dict[str, float]:
        """The metrics whose series the run does not already hold up to `step` (see `continue_history`)."""
        return {k: v for k, v in metrics.items() if step > self._logged_up_to.get(k, -1)}

    def continue_history(self) -> None:
        """After a restore. A crash can come after metrics were logged for steps past the checkpoint restored from;
        those steps are trained again, and logging them again would give a series two values at one step (Ray
        users meet duplicated epochs after restarts, ray#48664). So the values logged before the crash stand, and
        each series continues after its own last step. Queued ahead of every later call, so all of them see it."""
        def load() -> None:
            history = self._client.get_metric_history
            self._logged_up_to = {key: max((m.step for m in history(self.run_id, key)), default=-1)
                                  for key in self._client.get_run(self.run_id).data.metrics}

        self._submit("metric history", load)

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        self._submit(f"image {key}", lambda: self._client.log_image(self.run_id, image, key=key, step=step))

    def log_generator(self, generator, shape, step: int, tags: dict[str, str], metrics: dict[str, float],
                      keep: int = 0) -> None:
        """The generator as a LoggedModel at `step` with `metrics` (logged to the run too) linked to it: exported
        here, in the caller's thread (see registry.save_local), uploaded in the background; then, with `keep`, the
        run's models pruned to that many (registry.prune). Metrics alone when the export fails."""
        if not self.active:
            return
        from gan.tracking import registry

        try:
            directory = registry.save_local(generator, shape)
        except Exception as error:  # noqa: BLE001 - an unexportable model must not end training; say so, count it
            self.failed_calls += 1
            log.warning("could not export the generator at step %d as an MLflow model: %s", step, error)
            self.log_metrics(metrics, step)
            return

        def upload() -> None:
            registry.upload(self.tracking_uri, self.run_id, directory, step, tags, self.not_yet_logged(metrics, step))
            if keep:
                registry.prune(self.tracking_uri, self.run_id, keep)

        if not self._submit(f"generator model at step {step}", upload):
            shutil.rmtree(directory.parent, ignore_errors=True)

    def note_restart(self, epoch: int, step: int) -> None:
        """This worker group started from a checkpoint (after a worker died, or a rerun of the job): count it in
        the run's `restarts` tag and the `fault/restarts` series, at the step training continues from."""
        def record() -> None:
            restarts = int(self._client.get_run(self.run_id).data.tags.get("restarts", "0")) + 1
            self._client.set_tag(self.run_id, "restarts", str(restarts))
            self._client.set_tag(self.run_id, "restored_from", f"epoch {epoch} step {step}")
            self._client.log_metric(self.run_id, "fault/restarts", restarts, step=step)

        self._submit("restart note", record)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._submit("tags", lambda: [self._client.set_tag(self.run_id, k, v) for k, v in tags.items()])

    def lowest(self, key: str) -> float:
        """The lowest value of a metric this run has logged so far (inf if none, or if the store cannot say)."""
        if not self.active:
            return math.inf
        self.flush()
        try:
            return min((m.value for m in self._client.get_metric_history(self.run_id, key)), default=math.inf)
        except Exception as error:  # noqa: BLE001 - an unknown best only means the next one is logged as best
            log.warning("could not read %s from MLflow run %s: %s", key, self.run_id, error)
            return math.inf

    def flush(self, timeout: float = 300.0) -> bool:
        """Wait until every call queued so far was made (or failed); False if that took longer than timeout."""
        if not self.active:
            return True
        done = threading.Event()
        self._submit("flush", done.set)
        return done.wait(timeout)

    def close(self, timeout: float = 300.0) -> None:
        """Deliver what is queued, then stop the thread."""
        if self.active:
            self.flush(timeout)
            self._queue.put(None)
            self._thread.join(timeout)


class CheckpointTags:
    """Keeps the MLflow run's tags `checkpoint.latest` and `checkpoint.best` (the lowest fid_domain measured at a
    report, over resumes too: `checkpoint.best_fid_domain`) on the storage paths of those checkpoints, so the run
    page says where to resume or fine-tune from. Called by the Ray Train controller after each report."""

    def __init__(self, tracking_uri: str, run_id: str, run_folder: str):
        self.tracking_uri, self.run_id, self.run_folder = tracking_uri, run_id, run_folder.rstrip("/")
        self.best: float | None = None  # read from the run on first use: a resumed run keeps its best
        self._client: MlflowClient | None = None
        self._opening: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "_opening": None}

    def open_in_background(self) -> None:
        """Connect to the store now, beside the workers' start. A process's first call to an MLflow store costs
        ~1.3 s of CPU (a sqlite store checks its schema), which would otherwise land inside the run's second tick,
        on the cores training uses."""
        self._opening = threading.Thread(target=self._open_quietly, name="mlflow-checkpoint-tags", daemon=True)
        self._opening.start()

    def _open(self) -> MlflowClient:
        """The connected client; waits for the connection opened in the background, or opens one."""
        if self._opening is not None:
            self._opening.join()
            self._opening = None
        if self._client is None:
            self._connect()
        return self._client

    def _connect(self) -> None:
        client = MlflowClient(self.tracking_uri)
        self.best = float(client.get_run(self.run_id).data.tags.get("checkpoint.best_fid_domain", "inf"))
        self._client = client

    def _open_quietly(self) -> None:
        try:
            self._connect()
        except Exception:  # noqa: BLE001 - the first record() tries again and says what failed
            pass

    def record(self, checkpoint_name: str, score: float) -> None:
        """`score`: the fid_domain measured at this checkpoint's report (very large when none was)."""
        try:
            client = self._open()
            path = f"{self.run_folder}/{checkpoint_name}"
            tags = {"checkpoint.latest": path}
            if score < self.best:
                tags.update({"checkpoint.best": path, "checkpoint.best_fid_domain": f"{score:.6g}"})
            client.log_batch(self.run_id, tags=[RunTag(key, value) for key, value in tags.items()])  # one write
            self.best = min(self.best, score)
        except Exception as error:  # noqa: BLE001 - tags are a pointer; training must not stop for them
            log.warning("could not tag MLflow run %s with its checkpoint %s: %s", self.run_id, checkpoint_name, error)
