"""The jobs as users run them: `ray job submit` (the CLI) to a real `ray start --head` cluster, and cluster.yaml."""
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from gan.local_services import start_ray_head
from tests.conftest import REPO, clean_env

RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    # A short temp dir: Ray's unix socket paths must stay under ~107 characters.
    cluster = start_ray_head(Path(f"/tmp/ray-test-{uuid.uuid4().hex[:6]}"), num_cpus=2)
    yield cluster
    cluster.stop()


def _ray(cluster, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *args], env={**clean_env(), **cluster.env}, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def _submit(cluster, job_id: str, runtime_env: dict, *job_args: str, wait: bool) -> subprocess.CompletedProcess:
    return _ray(cluster, "job", "submit", "--address", cluster.url, "--submission-id", job_id,
                "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env),
                *([] if wait else ["--no-wait"]), "--", "python", "-m", "jobs.train", *job_args)


def _status(cluster, job_id: str) -> str:
    """The job's state word as `ray job status` prints it, upper-cased (SUCCEEDED, FAILED, RUNNING, ...)."""
    return _ray(cluster, "job", "status", "--address", cluster.url, job_id).stdout.upper()


@pytest.mark.slow
def test_submitted_training_job_succeeds_and_leaves_its_run_and_checkpoint(ray_cluster, digits_shards, tmp_path):
    tracking = f"sqlite:///{tmp_path / 'mlruns.db'}"
    job_id = f"train-{uuid.uuid4().hex[:6]}"
    submitted = time.time()
    result = _submit(ray_cluster, job_id, {"env_vars": {"MLFLOW_TRACKING_URI": tracking}},
                     "--shards", str(digits_shards), "--storage-path", str(tmp_path / "ray_results"),
                     "--artifact-root", str(tmp_path / "mlartifacts"), "--run-name", "submitted", "--epochs", "2",
                     "--steps-per-epoch", "3", "--batch-size", "16", "--g-features", "8", "--d-features", "8",
                     "--latent-dim", "16", "--log-every", "1", "--quality-every", "0", wait=True)
    assert "SUCCEEDED" in _status(ray_cluster, job_id), result.stdout[-3000:] + result.stderr[-3000:]
    assert "epoch 2/2 step 6" in result.stdout  # the progress line, as `ray job logs` shows it

    client = MlflowClient(tracking)  # the job found its tracking URI in the runtime env alone
    (run,) = client.search_runs([client.get_experiment_by_name("dcgan").experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics["epoch"] == 2
    first_step = min(m.timestamp for m in client.get_metric_history(run.info.run_id, "loss/G")) / 1000
    print(f"ray job submit -> first training step logged: {first_step - submitted:.1f} s")
    checkpoints = [p for p in (tmp_path / "ray_results" / "submitted").glob("checkpoint_*") if p.is_dir()]
    assert checkpoints and all((p / "train_state.pt").exists() for p in checkpoints)


@pytest.mark.slow
def test_submitted_job_with_a_bad_config_fails_fast_with_the_reason_in_its_logs(ray_cluster):
    job_id = f"bad-{uuid.uuid4().hex[:6]}"
    assert _submit(ray_cluster, job_id, {}, "--lr", "-1", wait=False).returncode == 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(s in _status(ray_cluster, job_id) for s in ("FAILED", "SUCCEEDED")):
        time.sleep(1)
    assert "FAILED" in _status(ray_cluster, job_id)
    logs = _ray(ray_cluster, "job", "logs", "--address", ray_cluster.url, job_id).stdout
    assert "train: --lr=-1.0 is out of range: it must be > 0.0" in logs
    assert "Started a local Ray instance" not in logs and "TorchTrainer" not in logs


def test_cluster_yaml_passes_rays_own_schema_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(raw))  # what `ray up` runs before it creates anything
    head = raw["available_node_types"][raw["head_node_type"]]
    gpu = raw["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1 and "g5" in gpu["node_config"]["InstanceType"]
    assert all("IamInstanceProfile" in node["node_config"] for node in (head, gpu))
    text = (REPO / "cluster.yaml").read_text()
    assert "aws_access_key_id" not in text.lower() and "AWS_SECRET" not in text  # S3 access via the profile only
    assert "--dashboard-host=127.0.0.1" in " ".join(raw["head_start_ray_commands"])
    assert any("pip install -e ~/dcgan-ray" in command for command in raw["setup_commands"])
