"""Several real Ray nodes on 127.0.0.1 (`ray start --head` with no CPUs for work, and worker nodes that join it with
`ray start --address`, each its own raylet, object store and temp dir), reached only through `ray job submit`, with
shards and checkpoints on the SeaweedFS S3 server and tracking on a real `mlflow server`."""
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from gan import storage
from gan.local_services import start_ray_head, start_ray_node
from gan.manifest import read_manifest
from gan.shard_writer import copy_shards, write_shards
from gan.sources import load_folder
from tests.conftest import BUCKET, REPO, clean_env
from tests.photos import write_photo_folder

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def nodes(s3_server):
    """A head and two one-CPU worker nodes (custom resources node_a, node_b); every process stopped at the end, by
    its own process group, however the tests went."""
    base = Path(f"/tmp/ray-nodes-{uuid.uuid4().hex[:6]}")  # short: Ray's socket paths must stay under ~107 chars
    head = start_ray_head(base / "head", num_cpus=0)
    started = [head]
    try:
        for name in ("node_a", "node_b"):
            started.append(start_ray_node(head, base / name, 1, {name: 1}, env=s3_server.env))
        yield {"head": head, "nodes": started[1:]}
    finally:
        for server in reversed(started):
            server.stop()


def _submit(nodes, runtime_env: dict, *command: str) -> subprocess.CompletedProcess:
    head = nodes["head"]
    return subprocess.run([RAY, "job", "submit", "--address", head.url, "--submission-id", f"mn-{uuid.uuid4().hex[:6]}",
                           "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env), "--", "python",
                           "-m", *command], env={**clean_env(), **head.env}, cwd=REPO, capture_output=True,
                          text=True, timeout=900)


def test_two_ranks_run_on_two_nodes_with_shards_and_checkpoints_in_s3(nodes, s3_env, mlflow_server, digits_shards):
    shards = f"s3://{BUCKET}/multinode/digits"
    copy_shards(str(digits_shards), shards)
    env = {"env_vars": {**s3_env.env, "MLFLOW_TRACKING_URI": mlflow_server.url}}
    result = _submit(nodes, env, "jobs.train", "--shards", shards, "--storage-path", f"s3://{BUCKET}/multinode/ray",
                     "--run-name", "placed", "--experiment", "multinode", "--num-workers", "2", "--epochs", "2",
                     "--steps-per-epoch", "4", "--batch-size", "16", "--g-features", "8", "--d-features", "8",
                     "--latent-dim", "16", "--quality-every", "0")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = MlflowClient(mlflow_server.url)
    (run,) = client.search_runs([client.get_experiment_by_name("multinode").experiment_id])
    assert run.info.status == "FINISHED"
    placement = dict(pair.split("=") for pair in run.data.tags["cluster.nodes"].split(","))
    assert set(placement) == {"0", "1"} and len(set(placement.values())) == 2  # one rank per node
    assert [m.value for m in client.get_metric_history(run.info.run_id, "cluster/world_size")] == [2.0, 2.0]
    assert run.data.tags["checkpoint.latest"].startswith(f"s3://{BUCKET}/multinode/ray/placed/checkpoint_")
    assert storage.read_bytes(run.data.tags["checkpoint.latest"] + "/meta.json")  # in the bucket, not on a node


def test_a_folder_build_spread_over_nodes_writes_the_same_shards_as_one_process(nodes, s3_env, tmp_path):
    folder = write_photo_folder(tmp_path / "photos")
    expected = write_shards(load_folder(str(folder), 32, 3), str(tmp_path / "one"), 64, 0.1, seed=0)
    out = f"s3://{BUCKET}/multinode/photos"
    result = _submit(nodes, {"env_vars": s3_env.env}, "jobs.make_shards", "--from-folder", str(folder), "--tasks",
                     "4", "--channels", "3", "--samples-per-shard", "64", "--out", out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Ray tasks on 2 node(s) wrote the shards" in result.stdout
    assert read_manifest(out).dataset_hash == expected.dataset_hash
