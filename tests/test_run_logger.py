"""The MLflow logger thread against a real sqlite store: metric calls are joined into few store writes, yet every
series arrives complete, each step once, and nothing waits past a flush."""
import time

import numpy as np
from mlflow import MlflowClient

from gan.tracking import runs
from gan.tracking.runs import RunLogger


def _run(tmp_path):
    tracking = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking)
    experiment = client.create_experiment("logger", artifact_location=str(tmp_path / "artifacts"))
    return tracking, client, client.create_run(experiment).info.run_id


class _CountingClient(MlflowClient):
    """The real client, counting the metric writes it makes."""
    metric_writes = 0

    def log_batch(self, run_id, metrics=(), **kwargs):
        _CountingClient.metric_writes += bool(metrics)
        return super().log_batch(run_id, metrics=metrics, **kwargs)


def test_metric_calls_go_out_together_and_every_series_arrives_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "MlflowClient", _CountingClient)
    monkeypatch.setattr(runs, "METRIC_BATCH_SECONDS", 600.0)  # only a flush or another call sends them
    tracking, client, run_id = _run(tmp_path)
    logger = RunLogger(tracking, run_id, active=True)
    for step in range(1, 31):  # three reports' worth of log windows
        logger.log_metrics({"loss/D": step / 10, "loss/G": -step}, step)
        if step % 10 == 0:
            logger.log_image(np.zeros((8, 8), dtype=np.uint8), "samples", step=step // 10)
    assert logger.flush(timeout=60)  # a flush delivers what waits, not after the batching window
    logger.close()

    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss/G")] == [(s, -s) for s in range(1, 31)]
    assert len(client.get_metric_history(run_id, "loss/D")) == 30
    assert len([a for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png")]) == 3
    # Each grid ends a batch (order is kept), so three writes for thirty calls; there were no failures.
    assert _CountingClient.metric_writes == 3 and logger.failed_calls == 0


def test_metrics_go_out_on_their_own_after_the_batching_window(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "METRIC_BATCH_SECONDS", 0.2)
    tracking, client, run_id = _run(tmp_path)
    logger = RunLogger(tracking, run_id, active=True)
    logger.log_metrics({"loss/D": 1.0}, 1)
    for _ in range(100):  # up to 10 s for the 0.2 s window; no flush, no other call
        if client.get_metric_history(run_id, "loss/D"):
            break
        time.sleep(0.1)
    assert [m.value for m in client.get_metric_history(run_id, "loss/D")] == [1.0]
    logger.close()
