"""The jobs as users run them: `ray job submit` (the CLI) to a real `ray start --head` cluster, and cluster.yaml."""
import csv
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from gan.tracking.registry import model_metric
from tests.helpers import REPO, clean_env, logged_models, metric_values, new_lows
from tests.services import start_ray_head

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


def _submit(cluster, job_id: str, runtime_env: dict, *job_args: str, wait: bool,
            job: str = "jobs.train") -> subprocess.CompletedProcess:
    return _ray(cluster, "job", "submit", "--address", cluster.url, "--submission-id", job_id,
                "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env),
                *([] if wait else ["--no-wait"]), "--", "python", "-m", job, *job_args)


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
    assert "tick 2/2  epoch 2  0.2 kimg" in result.stdout  # the progress line, as `ray job logs` shows it

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


@pytest.mark.slow
def test_submitted_pbt_sweep_clones_a_leader_and_survives_a_diverging_trial(ray_cluster, digits_shards, tmp_path):
    tracking = f"sqlite:///{tmp_path / 'mlruns.db'}"
    job_id = f"pbt-{uuid.uuid4().hex[:6]}"
    # The drill (tests/nan_drill.py) makes the lr=2e-3 trial's loss NaN in its first epoch, in every worker process
    # of this job, loaded through Ray's own worker setup hook.
    runtime_env = {"worker_process_setup_hook": "tests.nan_drill.install",
                   "env_vars": {"MLFLOW_TRACKING_URI": tracking, "NAN_DRILL_LR": "2e-3"}}
    result = _submit(ray_cluster, job_id, runtime_env, "--shards", str(digits_shards), "--run-name", "pbt",
                     "--storage-path", str(tmp_path / "ray"), "--artifact-root", str(tmp_path / "mlartifacts"),
                     "--scheduler", "pbt", "--perturbation-interval", "2", "--epochs", "4", "--steps-per-epoch", "4",
                     "--batch-size", "16", "--g-features", "8", "--d-features", "8", "--grid",
                     "--quality-every", "1", "--quality-samples", "200", "--search", "lr=1e-4,5e-4,2e-3 latent_dim=16",
                     "--num-samples", "1", "--num-workers", "1", "--cpus-per-worker", "1",
                     "--max-concurrent-trials", "2",
                     wait=True, job="jobs.sweep")
    assert "SUCCEEDED" in _status(ray_cluster, job_id), result.stdout[-3000:] + result.stderr[-3000:]

    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("dcgan").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("job") == "sweep"]
    children = {float(r.data.params["lr"]): r for r in runs if r.data.tags.get("mlflow.parentRunId")}
    assert sorted(children) == [1e-4, 5e-4, 2e-3]

    diverged = children.pop(2e-3)  # failed alone; the sweep went on
    assert diverged.info.status == "FAILED" and diverged.data.tags["status"] == "diverged"
    assert diverged.data.tags["diverged_at_step"] == "4"  # the first log window holding the NaN step
    for child in children.values():
        assert (child.info.status, child.data.tags["status"]) == ("FINISHED", "completed")
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "loss/G")]
        assert len(steps) == len(set(steps)) and max(steps) == 16  # 4 epochs x 4 steps, none trained twice

    # Synchronous PBT at epoch 2 over the 2 live trials: the bottom one continues from the top one's weights
    # with a perturbed rate, recorded on its run.
    (cloned,) = [c for c in children.values() if "pbt.clones" in c.data.tags]
    donor_id, _, when = cloned.data.tags["pbt.clones"].partition(" at ")
    assert when == "epoch 2" and donor_id in {c.data.tags["tune.trial_id"] for c in children.values()} - {
        cloned.data.tags["tune.trial_id"]}
    rates = [(m.step, m.value) for m in client.get_metric_history(cloned.info.run_id, "pbt/lr")]
    assert sorted(step for step, _ in rates) == [0, 8]
    # Each run keeps the best generator it measured itself, over both of its generations.
    for child in children.values():
        measured = metric_values(client, child.info.run_id, "quality/fid_domain")
        assert len(measured) == 4 and metric_values(client, child.info.run_id, "best/fid_domain") == new_lows(measured)
        models = logged_models(tracking, child.info.run_id)  # --keep-models 3: the newest and the two best others
        assert len(models) == 3 and model_metric(models[0], "quality/fid_domain") == min(measured)
    assert not logged_models(tracking, diverged.info.run_id)  # it never reached a quality measurement

    table = list(csv.DictReader(open(client.download_artifacts(parent.info.run_id, "summary.csv"))))
    assert sorted(row["status"] for row in table) == ["completed"] * 2 + ["diverged"]
    (row,) = [row for row in table if row["trial_id"] == cloned.data.tags["tune.trial_id"]]
    assert float(row["lr"]) == pytest.approx(max(rates)[1])  # the table holds the rate the trial ended with


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
