"""Running the real training job as a subprocess in a test, and reading what it left: checkpoints and its MLflow run.

Used by the fault and outage tests, which start, interrupt and restart real runs."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow import MlflowClient

from gan.shards.batches import plan_epoch
from gan.shards.manifest import read_manifest
from gan.training.checkpoint import META_FILE
from tests.helpers import clean_env

# Full-width models (about 5 s per epoch here), so a fault can land in the middle of an epoch.
EPOCH_FLAGS = ["--batch-size", "16", "--quality-every", "0", "--log-every", "5", "--num-workers", "2",
               "--g-features", "64", "--d-features", "64"]


def expected_steps(shards: Path, epochs: int, workers: int = 2, batch_size: int = 16) -> int:
    train = read_manifest(str(shards)).shards("train")
    return sum(plan_epoch(train, workers, batch_size, epoch, 0, 0).steps for epoch in range(epochs))


def train_command(shards, work: Path, run_name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jobs.train", "--shards", str(shards), *EPOCH_FLAGS, "--run-name", run_name,
            "--tracking-uri", f"sqlite:///{work / 'mlruns.db'}", "--artifact-root", str(work / "mlartifacts"),
            "--storage-path", str(work / "ray"), *extra]


def start_training(command: list[str], work: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=work, stdout=open(work / "train.out", "a"), stderr=open(work / "train.err", "a"),
                            env={**clean_env(), **(env or {})}, start_new_session=True, text=True)


def finish(process: subprocess.Popen, timeout: float = 600) -> int:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise AssertionError(f"training did not finish in {timeout:.0f} s (a DDP hang?)") from None


def complete_checkpoints(work: Path, run_name: str) -> list[Path]:
    return sorted(p for p in (work / "ray" / run_name).glob("checkpoint_*") if (p / META_FILE).exists())


def wait_for_checkpoint(process: subprocess.Popen, work: Path, run_name: str, count: int = 1, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while len(complete_checkpoints(work, run_name)) < count:
        assert process.poll() is None, f"training ended early: {(work / 'train.err').read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.2)


def the_run(work: Path, run_name: str, tracking_uri: str | None = None):
    client = MlflowClient(tracking_uri or f"sqlite:///{work / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("dcgan")
    runs = client.search_runs([experiment.experiment_id], f"tags.`ray.run_name` = '{run_name}'")
    assert len(runs) == 1, f"{len(runs)} MLflow runs for {run_name}"
    return client, runs[0]


def steps_of(client, run, metric: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, metric))
