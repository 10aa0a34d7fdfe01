"""Shared fixtures: a tiny real shard set built from the bundled digits, hand-made shards with bad samples, and one
local Ray for the session."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gan.image_codec import encode_image
from gan.manifest import Manifest, ShardInfo, write_manifest
from gan.shard_writer import tar_bytes, write_shards
from gan.sources import load_digits

REPO = Path(__file__).resolve().parents[1]


def clean_env() -> dict[str, str]:
    """This environment without S3, MLflow and Ray addresses, for subprocesses that must get those from the test."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "RAY_ADDRESS"))}


@pytest.fixture
def raw_shard_with_bad_samples(tmp_path) -> tuple[Path, ShardInfo]:
    """A one-shard raw 32x32x1 set: six good samples, then one a byte short, one with three channels and one stored
    as PNG."""
    good = encode_image(np.full((32, 32, 1), 7, np.uint8), "raw")
    samples = [(f"good-{i}", "raw", good, 0) for i in range(6)] + [
        ("short", "raw", good[:-1], 0), ("rgb", "raw", encode_image(np.zeros((32, 32, 3), np.uint8), "raw"), 0),
        ("png-in-raw-set", "png", encode_image(np.zeros((32, 32, 1), np.uint8), "png"), 0)]
    body = tar_bytes(samples)
    (tmp_path / "train-000000.tar").write_bytes(body)
    shard = ShardInfo("train-000000.tar", len(samples), hashlib.sha256(body).hexdigest())
    write_manifest(str(tmp_path), Manifest(32, 1, ["0"], {"train": [shard]}, image_format="raw"))
    return tmp_path, shard


@pytest.fixture(scope="session")
def digits_shards(tmp_path_factory) -> Path:
    """All 1,797 digits at 32x32x1 in 100-image shards (17 train, 2 holdout)."""
    out = tmp_path_factory.mktemp("digits")
    write_shards(load_digits(32, 1), str(out), samples_per_shard=100, holdout_fraction=0.1, seed=0)
    return out


@pytest.fixture(scope="session")
def local_ray():
    """A real local Ray instance (2 CPUs) shared by the tests that train; shut down at the end."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


S3_ACCESS_KEY = "dcgan-test-key"
S3_SECRET_KEY = "dcgan-test-secret-5f1c9e"  # tests search logs and MLflow for this string
BUCKET = "dcgan"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real SeaweedFS (`weed mini`) on free loopback ports with one bucket; stopped by PID at the end."""
    from gan.local_services import start_seaweedfs

    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), S3_ACCESS_KEY, S3_SECRET_KEY, buckets=(BUCKET,))
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """This process's S3 clients pointed at the test server through the standard AWS variables only."""
    from gan import storage

    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    storage.configure("")
    storage._s3_client.cache_clear()
    yield s3_server
    storage._s3_client.cache_clear()


@pytest.fixture(scope="session")
def mlflow_server(s3_server, tmp_path_factory):
    """A real `mlflow server` (sqlite backend) proxying artifacts into the SeaweedFS bucket."""
    from gan.local_services import start_mlflow_server

    work = tmp_path_factory.mktemp("mlflow-server")
    server = start_mlflow_server(f"sqlite:///{work / 'mlflow.db'}", f"s3://{BUCKET}/mlartifacts",
                                 work / "server.log", env=s3_server.env)
    yield server
    server.stop()


# A configured case for ASHA: trials run one at a time in grid order (lr, then Adam's beta1), and with
# this tiny model a large learning rate measurably worsens fid_domain in the first epoch (measured 4100 vs 4096), so
# the last two trials land below the rung-1 cut-off that the first two set, and ASHA must stop them. The case was
# measured on the plain DCGAN step, so EMA and DiffAugment stay off here: they are tested on their own.
TINY_SWEEP = ["--epochs", "3", "--steps-per-epoch", "4", "--batch-size", "16", "--g-features", "8", "--d-features", "8",
              "--quality-every", "1", "--quality-samples", "200", "--num-samples", "1", "--grid",
              "--search", "lr=1e-6,2e-3 latent_dim=16 beta1=0.5,0.7", "--ema-half-life-kimg", "0", "--diffaugment", ""]


def metric_values(client, run_id: str, key: str) -> list[float]:
    """A run's values of one metric in step order (MLflow returns them in no set order)."""
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))]


def new_lows(values: list[float]) -> list[float]:
    """The values that beat every one before them: what a run logs as best/fid_domain from its quality series."""
    return [value for i, value in enumerate(values) if value < min(values[:i], default=float("inf"))]


def fid_of_model(uri: str, tracking_uri: str, shards: Path, samples: int, seed: int = 0) -> float:
    """quality/fid_domain of a logged generator (any MLflow model URI), loaded as a user would and measured here
    the way a run's rank 0 measures it."""
    from gan.classifier import load_reference, reference_location
    from gan.manifest import read_manifest
    from gan.quality import evaluate_generator
    from gan.sampling import load

    sampler = load(uri, tracking_uri)
    reference = load_reference(reference_location(str(shards), read_manifest(str(shards))))
    return evaluate_generator(sampler.module, reference, sampler.latent_dim, samples, seed)["quality/fid_domain"]


def logged_models(tracking_uri: str, run_id: str) -> list:
    """The run's logged generators, best (lowest quality/fid_domain) first."""
    from mlflow import MlflowClient

    from gan.registry import run_models

    return run_models(MlflowClient(tracking_uri), run_id)


def sweep_command(shards: Path, work: Path, *extra: str) -> list[str]:
    """The tiny sweep 'sw', tracked in work/mlruns.db with artifacts in work/mlartifacts."""
    return [sys.executable, "-m", "jobs.sweep", "--shards", str(shards), *TINY_SWEEP, "--run-name", "sw",
            "--tracking-uri", f"sqlite:///{work / 'mlruns.db'}", "--artifact-root", str(work / "mlartifacts"),
            "--storage-path", str(work / "ray"), *extra]


@pytest.fixture(scope="session")
def swept(digits_shards, local_ray, tmp_path_factory) -> Path:
    """A folder holding the MLflow store and Ray results of one finished tiny sweep (shared by sweep and UI tests).

    It runs beside this session's other Ray (`local_ray`), as two jobs on one workstation would: with two clusters on
    a machine, the trials that ASHA stops must still give their CPUs back (gan/ray_session.py), or the sweep hangs."""
    work = tmp_path_factory.mktemp("sweep")
    result = subprocess.run(sweep_command(digits_shards, work), cwd=work, capture_output=True, text=True, timeout=900,
                            env=clean_env())
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return work
