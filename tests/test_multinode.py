"""Several real Ray nodes on 127.0.0.1 (`ray start --head` with no CPUs for work, and worker nodes that join it with
`ray start --address`, each its own raylet, object store and temp dir), reached only through `ray job submit`, with
shards and checkpoints on the SeaweedFS S3 server and tracking on a real `mlflow server`."""
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from gan.shards import storage
from gan.shards.manifest import read_manifest
from gan.shards.sources import load_folder
from gan.shards.writer import copy_shards, write_shards
from tests.helpers import BUCKET, REPO, clean_env
from tests.photos import write_photo_folder
from tests.services import live_nodes, start_ray_head, start_ray_node

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def nodes(s3_server):
    """A head and two one-CPU worker nodes (custom resources node_a, node_b); every process stopped at the end, by
    its own process group, however the tests went."""
    base = Path(f"/tmp/ray-nodes-{uuid.uuid4().hex[:6]}")  # short: Ray's socket paths must stay under ~107 chars
    # A lost node is noticed in about 3 s instead of Ray's default of about 30.
    head = start_ray_head(base / "head", num_cpus=0, extra_env={"RAY_health_check_period_ms": "1000",
                                                                 "RAY_health_check_failure_threshold": "3"})
    started = [head]
    try:
        by_name = {}
        for name in ("node_a", "node_b"):
            by_name[name] = start_ray_node(head, base / name, 1, {name: 1}, env=s3_server.env)
            started.append(by_name[name])
        yield {"head": head, "by_name": by_name, "base": base, "env": s3_server.env}
    finally:
        for server in reversed(started):
            server.stop()


def _submit(nodes, runtime_env: dict, *command: str) -> subprocess.CompletedProcess:
    head = nodes["head"]
    return subprocess.run([RAY, "job", "submit", "--address", head.url, "--submission-id", f"mn-{uuid.uuid4().hex[:6]}",
                           "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env), "--", "python",
                           "-m", *command], env={**clean_env(), **head.env}, cwd=REPO, capture_output=True,
                          text=True, timeout=900)


def test_a_folder_build_spread_over_nodes_writes_the_same_shards_as_one_process(nodes, s3_env, tmp_path):
    folder = write_photo_folder(tmp_path / "photos")
    expected = write_shards(load_folder(str(folder), 32, 3), str(tmp_path / "one"), 64, 0.1, seed=0)
    out = f"s3://{BUCKET}/multinode/photos"
    result = _submit(nodes, {"env_vars": s3_env.env}, "jobs.make_shards", "--from-folder", str(folder), "--tasks",
                     "4", "--channels", "3", "--samples-per-shard", "64", "--out", out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Ray tasks on 2 node(s) wrote the shards" in result.stdout
    assert read_manifest(out).dataset_hash == expected.dataset_hash


# A tiny model on the digits, one metric window every 5 steps; the node-loss tests add their length and workers.
TINY_RUN = ["--batch-size", "16", "--g-features", "8", "--d-features", "8", "--latent-dim", "16", "--log-every", "5",
            "--quality-samples", "100", "--max-failures", "2"]


class _SubmittedRun:
    """A training job submitted without waiting, and its one MLflow run (in its own experiment)."""

    def __init__(self, nodes, mlflow_server, s3_env, name: str, *flags: str, env_vars: dict | None = None):
        self.head, self.job_id, self.experiment = nodes["head"], f"{name}-{uuid.uuid4().hex[:6]}", f"multinode-{name}"
        self.ray_env = {**clean_env(), **self.head.env}
        env = {"env_vars": {**s3_env.env, "MLFLOW_TRACKING_URI": mlflow_server.url, **(env_vars or {})}}
        submitted = self._ray("submit", "--submission-id", self.job_id, "--working-dir", str(REPO),
                              "--runtime-env-json", json.dumps(env), "--no-wait", "--", "python", "-m", "jobs.train",
                              "--storage-path", f"s3://{BUCKET}/multinode/ray", "--run-name", name, "--experiment",
                              self.experiment, *TINY_RUN, *flags, timeout=300)
        assert submitted.returncode == 0, submitted.stderr[-2000:]
        self.client = MlflowClient(mlflow_server.url)

    def _ray(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, "job", args[0], "--address", self.head.url, *args[1:]], env=self.ray_env, cwd=REPO,
                              capture_output=True, text=True, timeout=timeout)

    def run(self):
        experiment = self.client.get_experiment_by_name(self.experiment)
        runs = self.client.search_runs([experiment.experiment_id]) if experiment else []
        return runs[0] if runs else None

    def steps(self, key: str) -> list[int]:
        return [m.step for m in self.client.get_metric_history(self.run().info.run_id, key)]

    def values(self, key: str) -> list[float]:
        """In step order."""
        history = self.client.get_metric_history(self.run().info.run_id, key) if self.run() else []
        return [m.value for m in sorted(history, key=lambda m: m.step)]

    def node_of_rank(self, rank: int) -> str:
        """The name (custom resource) of the node running `rank` now, from the run's placement tag."""
        placement = dict(pair.split("=") for pair in self.run().data.tags["cluster.nodes"].split(","))
        return next(name for name in live_nodes(self.head)[placement[str(rank)]] if name.startswith("node_"))

    def wait_for_first_checkpoint(self) -> None:
        _wait_until(lambda: self.run() is not None and "checkpoint.latest" in self.run().data.tags, 300)

    def assert_it_succeeds(self) -> None:
        status = ""
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not any(s in status for s in ("SUCCEEDED", "FAILED", "STOPPED")):
            time.sleep(2)
            status = self._ray("status", self.job_id).stdout.upper()
        assert "SUCCEEDED" in status, self._ray("logs", self.job_id).stdout[-4000:]

    def stop(self) -> None:
        self._ray("stop", self.job_id)

    def assert_one_value_per_step(self, keys: tuple[str, ...], windows: range, epochs: range) -> None:
        """No step logged twice in any series (ray#48664), and no window or epoch end missing."""
        for key in keys:
            steps = self.steps(key)
            assert len(steps) == len(set(steps)), (key, sorted(steps))
        assert sorted(self.steps("loss/D")) == list(windows)
        assert sorted(self.steps("epoch")) == list(epochs)


def _shrank_after_full_size(sizes: list[float]) -> bool:
    return 2.0 in sizes and 1.0 in sizes[sizes.index(2.0):]


def _wait_until(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not condition():
        time.sleep(1)


def test_two_ranks_on_two_nodes_lose_one_mid_run_and_resume_on_the_others_with_one_value_per_step(
        nodes, s3_env, mlflow_server, digits_shards):
    """Shards and checkpoints in S3, one rank per node; the node holding rank 1 goes away after the first
    checkpoint, and the run resumes on the spare with the same two ranks."""
    spare = start_ray_node(nodes["head"], nodes["base"] / "node_c", 1, {"node_c": 1}, env=nodes["env"])
    nodes["by_name"]["node_c"] = spare
    shards = f"s3://{BUCKET}/multinode/digits-loss"
    copy_shards(str(digits_shards), shards)
    job = _SubmittedRun(nodes, mlflow_server, s3_env, "lost", "--shards", shards, "--num-workers", "2", "--epochs",
                        "4", "--steps-per-epoch", "25", "--quality-every", "1")
    try:
        job.wait_for_first_checkpoint()
        time.sleep(3)  # into the next epoch, past some of its logged windows
        lost = job.node_of_rank(1)
        nodes_before = job.run().data.tags["cluster.nodes"]
        checkpoint = job.run().data.tags["checkpoint.latest"]
        assert checkpoint.startswith(f"s3://{BUCKET}/multinode/ray/lost/checkpoint_")
        assert storage.read_bytes(checkpoint + "/meta.json")  # in the bucket, not on the node about to go
        nodes["by_name"][lost].stop()  # raylet and workers, as a lost machine would go
        job.assert_it_succeeds()
    finally:
        job.stop()
        spare.stop()
    final = job.run()
    assert final.info.status == "FINISHED" and final.data.tags["restarts"] == "1"
    assert job.values("fault/restarts") == [1.0]
    job.assert_one_value_per_step(("loss/D", "quality/fid_domain", "epoch"), range(5, 101, 5), range(25, 101, 25))
    assert sorted(job.steps("quality/fid_domain")) == [25, 50, 75, 100]  # none missing: one measurement per epoch
    placement_before = dict(p.split("=") for p in nodes_before.split(","))
    assert set(placement_before) == {"0", "1"} and len(set(placement_before.values())) == 2  # one rank per node
    nodes_after = set(dict(p.split("=") for p in final.data.tags["cluster.nodes"].split(",")).values())
    assert placement_before["1"] not in nodes_after and len(nodes_after) == 2
    assert set(job.values("cluster/world_size")) == {2.0}  # a fixed-size run: two ranks before and after


def test_an_elastic_run_shrinks_when_a_node_is_lost_and_grows_back_when_one_joins(nodes, s3_env, mlflow_server,
                                                                                 digits_shards):
    head = nodes["head"]
    # Two live worker nodes to start on, whatever the tests before this one stopped.
    while len([n for n in live_nodes(head).values() if any(k.startswith("node_") for k in n)]) < 2:
        name = f"node_{uuid.uuid4().hex[:4]}"
        nodes["by_name"][name] = start_ray_node(head, nodes["base"] / name, 1, {name: 1}, env=nodes["env"])
    shards = f"s3://{BUCKET}/multinode/digits-elastic"
    copy_shards(str(digits_shards), shards)
    # Ray's first restart after a loss still counts the lost node (its view of the cluster is refreshed every 20 s)
    # and waits out a worker-group start timeout before starting on fewer ranks: 25 s here instead of 60.
    job = _SubmittedRun(nodes, mlflow_server, s3_env, "elastic", "--shards", shards, "--num-workers", "2",
                        "--min-workers", "1", "--elastic-resize-seconds", "5", "--epochs", "70", "--steps-per-epoch",
                        "20", "--quality-every", "10", env_vars={"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "25"})
    joined = None
    try:
        job.wait_for_first_checkpoint()
        # An elastic run starts on the workers Ray's (20 s old) view of the cluster has room for: on a busy machine a
        # node started just above may not be in it yet, and the run then grows to 2 ranks at a resize check.
        _wait_until(lambda: 2.0 in job.values("cluster/world_size"), 300)
        nodes["by_name"][job.node_of_rank(1)].stop()  # no spare node: the run must go on with one rank
        _wait_until(lambda: _shrank_after_full_size(job.values("cluster/world_size")), 300)
        assert _shrank_after_full_size(job.values("cluster/world_size")), job.values("cluster/world_size")
        joined = start_ray_node(head, nodes["base"] / "node_back", 1, {"node_back": 1}, env=nodes["env"])
        job.assert_it_succeeds()
    finally:
        job.stop()
        if joined is not None:
            joined.stop()
    final, sizes = job.run(), job.values("cluster/world_size")
    full = sizes.index(2.0)
    shrunk, grown = sizes.index(1.0, full), len(sizes) - sizes[::-1].index(1.0)
    assert set(sizes[full:shrunk]) == {2.0} and set(sizes[shrunk:grown]) == {1.0}, sizes  # 2, then 1 ...
    assert grown < len(sizes) and set(sizes[grown:]) == {2.0}, sizes  # ... then 2 again
    assert final.info.status == "FINISHED"
    assert job.values("fault/restarts") == [1.0]  # the loss; growing back is no fault
    assert "-> 2 ranks" in final.data.tags["cluster.grew_at"]
    # The schedule is the full group's at every size: every window and every epoch end, none missing.
    job.assert_one_value_per_step(("loss/D", "quality/fid_domain", "epoch", "cluster/world_size"),
                                  range(5, 1401, 5), range(20, 1401, 20))
    assert final.data.metrics["kimg"] == pytest.approx(1400 * 32 / 1000)
