"""Shared fixtures: a tiny real shard set built from the bundled digits, hand-made shards with bad samples, and one
local Ray for the session."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from gan.shards.image_codec import encode_image
from gan.shards.manifest import Manifest, ShardInfo, write_manifest
from gan.shards.sources import load_digits
from gan.shards.writer import tar_bytes, write_shards
from tests.helpers import BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY, clean_env, sweep_command


# The files that take longest start first, longest first, so that neither of the two pytest workers is left alone
# with a long file at the end (pyproject.toml's --no-loadscope-reorder keeps this order; xdist would otherwise sort
# files by their number of tests). The multi-node file, mostly waiting on Ray's timers, overlaps the CPU-bound sweep;
# the sweep's readers run after it (they wait for it). Times: tests/README.md.
LONGEST_FIRST = ("test_multinode", "test_sweep", "test_user_folders", "test_foreign_shards", "test_outages",
                 "test_cluster", "test_faults", "test_model_registry")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        module = item.module.__name__.rsplit(".", 1)[-1]
        return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the other files keep their order


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
    return _write_digit_shards(tmp_path_factory.mktemp("digits"), tmp_path_factory)


def _session_folder(tmp_path_factory) -> Path:
    """The folder every pytest worker of this session sees (pytest-N/, above each worker's own)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _write_digit_shards(out: Path, tmp_path_factory) -> Path:
    """The digits set, with its cached quality reference beside it as a second run would find it: the session
    trains the classifier once (about 35 CPU-seconds on 2 cores) and every copy of the set reuses it.
    test_quality.py trains it on copies of its own, and checks what the cache holds."""
    from gan.metrics.classifier import ensure_reference

    manifest = write_shards(load_digits(32, 1), str(out), samples_per_shard=100, holdout_fraction=0.1, seed=0)
    shared = _session_folder(tmp_path_factory)
    trained = shared / manifest.reference_name
    with FileLock(str(shared / "quality-reference.lock")):
        if trained.exists():
            shutil.copyfile(trained, out / manifest.reference_name)
        else:
            ensure_reference(str(out), manifest)
            shutil.copyfile(out / manifest.reference_name, trained)
    return out


@pytest.fixture(scope="session")
def local_ray():
    """A real local Ray instance (2 CPUs) shared by the tests that train; shut down at the end."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real SeaweedFS (`weed mini`) on free loopback ports with one bucket; stopped by PID at the end."""
    from tests.services import start_seaweedfs

    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), S3_ACCESS_KEY, S3_SECRET_KEY, buckets=(BUCKET,))
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """This process's S3 clients pointed at the test server through the standard AWS variables only."""
    from gan.shards import storage

    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    storage.configure("")
    storage._s3_client.cache_clear()
    yield s3_server
    storage._s3_client.cache_clear()


@pytest.fixture(scope="session")
def mlflow_server(s3_server, tmp_path_factory):
    """A real `mlflow server` (sqlite backend) proxying artifacts into the SeaweedFS bucket."""
    from tests.services import start_mlflow_server

    work = tmp_path_factory.mktemp("mlflow-server")
    server = start_mlflow_server(f"sqlite:///{work / 'mlflow.db'}", f"s3://{BUCKET}/mlartifacts",
                                 work / "server.log", env=s3_server.env)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def swept(local_ray, tmp_path_factory) -> Path:
    """A folder holding the digit shards (`shards/`), the MLflow store and the Ray results of one finished tiny sweep,
    read by the sweep and UI tests. It runs once per session: with two pytest workers, the first to need it runs it
    under a file lock in the session's shared temp folder and the other reuses it.

    It runs beside this session's other Ray (`local_ray`), as two jobs on one workstation would: with two clusters on
    a machine, the trials that ASHA stops must still give their CPUs back (gan/run/ray_session.py), or the sweep hangs."""
    shared = _session_folder(tmp_path_factory)
    work = shared / "sweep"
    with FileLock(str(shared / "sweep.lock")):
        if not (work / "finished").exists():
            shutil.rmtree(work, ignore_errors=True)
            shards = _write_digit_shards(work / "shards", tmp_path_factory)  # the `digits_shards` set, shared
            result = subprocess.run(sweep_command(shards, work), cwd=work, capture_output=True, text=True,
                                    timeout=900, env=clean_env())
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
            (work / "finished").touch()
    return work
