"""Shards, checkpoints and MLflow artifacts in a real S3-compatible store (SeaweedFS on 127.0.0.1)."""
import io
import json
import subprocess
import sys
import tarfile
import urllib.parse
import urllib.request
import uuid

import boto3
import pytest
import torch

from gan.metrics.classifier import ensure_reference
from gan.shards import storage
from gan.shards.batches import rank_samples
from gan.shards.manifest import read_manifest
from gan.shards.reader import DataError, DataHealth, ReadPolicy
from gan.shards.writer import copy_shards
from tests.helpers import BUCKET, REPO, S3_SECRET_KEY, clean_env, logged_models

FAST_RETRY = ReadPolicy(attempts=2, backoff_seconds=0.05)


def _client(server):
    return boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id=server.env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=server.env["AWS_SECRET_ACCESS_KEY"])


def _upload(digits_shards) -> str:
    prefix = f"s3://{BUCKET}/shards-{uuid.uuid4().hex[:8]}"
    copy_shards(str(digits_shards), prefix)
    return prefix


def _cut_at_member_boundary(tar_bytes: bytes, keep_samples: int) -> bytes:
    """A valid tar holding only the first samples: WebDataset reads it without any error."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as source, tarfile.open(fileobj=out, mode="w") as target:
        keys = []
        for member in source.getmembers():
            key = member.name.split(".")[0]
            if key not in keys:
                keys.append(key)
            if len(keys) <= keep_samples:
                target.addfile(member, source.extractfile(member))
    return out.getvalue()


def _read_all(prefix: str, policy: ReadPolicy = FAST_RETRY) -> tuple[list[str], DataHealth]:
    manifest = read_manifest(prefix)
    health = DataHealth()
    samples = rank_samples(prefix, tuple(manifest.shards("train")), manifest.image_spec, 10, 0, health, policy)
    keys = [key for _, _, key in samples]
    return keys, health


def test_shards_stream_from_s3_exactly_as_from_disk(s3_env, digits_shards):
    local = read_manifest(str(digits_shards))
    reference, _ = ensure_reference(str(digits_shards), local)
    prefix = _upload(digits_shards)
    keys, health = _read_all(prefix)
    local_keys, _ = _read_all(str(digits_shards))
    assert sorted(keys) == sorted(local_keys) and len(keys) == 1617
    assert (health.bad_shards, health.skipped_samples) == (0, 0)
    assert read_manifest(prefix).dataset_hash == local.dataset_hash
    # The set's cached quality reference came along: a run on the copy loads it instead of training the classifier.
    copied, built = ensure_reference(prefix, read_manifest(prefix))
    assert not built and torch.equal(copied.holdout_features, reference.holdout_features)


@pytest.mark.parametrize("damage, lost", [
    ("truncated", None),
    ("garbage", 100),
    ("cut_at_boundary", 60),
    ("missing", 100),
])
def test_a_bad_shard_is_detected_counted_and_skipped(s3_env, digits_shards, damage, lost):
    prefix = _upload(digits_shards)
    bucket, key = storage.split_s3(storage.join(prefix, "train-000004.tar"))
    client = _client(s3_env)
    original = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    if damage == "missing":
        client.delete_object(Bucket=bucket, Key=key)
    else:
        body = {"truncated": original[: len(original) // 2 + 100], "garbage": bytes(range(256)) * 40,
                "cut_at_boundary": _cut_at_member_boundary(original, 40)}[damage]
        client.put_object(Bucket=bucket, Key=key, Body=body)

    keys, health = _read_all(prefix)
    assert health.bad_shards == 1 and "train-000004.tar" in health.problems[0]
    assert len(keys) + health.skipped_samples == 1617 and len(keys) == len(set(keys))
    if lost is not None:
        assert health.skipped_samples == lost

    with pytest.raises(DataError, match=r"bad shard s3://.*/train-000004\.tar.*--strict"):
        _read_all(prefix, ReadPolicy(strict=True, attempts=1))


def test_wrong_credentials_fail_once_and_clearly(s3_env, digits_shards):
    prefix = _upload(digits_shards)
    env = {**s3_env.env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    result = subprocess.run([sys.executable, "-m", "jobs.train", "--shards", prefix], cwd=REPO, text=True,
                            capture_output=True, timeout=120, env={**clean_env(), **env})
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert "access denied (SignatureDoesNotMatch)" in message and s3_env.url in message
    assert "AWS_SECRET_ACCESS_KEY" in message  # names the fix
    assert "Traceback" not in result.stderr


def _rest(server, path: str, **query) -> dict:
    url = f"{server.url}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


@pytest.mark.slow
def test_training_reads_s3_and_keeps_checkpoints_and_artifacts_there(s3_env, mlflow_server, digits_shards, tmp_path):
    client = _client(s3_env)
    shards = f"s3://{BUCKET}/itest/digits"
    env = {**clean_env(), **s3_env.env}
    made = subprocess.run([sys.executable, "-m", "jobs.make_shards", "--upload-from", str(digits_shards), "--out",
                           shards], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    # One shard cut at a member boundary: the run must notice, count it in MLflow and go on.
    key = "itest/digits/train-000002.tar"
    original = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    client.put_object(Bucket=BUCKET, Key=key, Body=_cut_at_member_boundary(original, 30))

    run_name = f"s3-{uuid.uuid4().hex[:6]}"
    result = subprocess.run(
        [sys.executable, "-m", "jobs.train", "--shards", shards, "--storage-path", f"s3://{BUCKET}/itest/ray",
         "--tracking-uri", mlflow_server.url, "--experiment", "s3-itest", "--run-name", run_name, "--epochs", "2",
         "--batch-size", "64", "--g-features", "8", "--d-features", "8", "--latent-dim", "16", "--log-every", "4",
         "--max-failures", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]

    objects = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=f"itest/ray/{run_name}/")["Contents"]]
    assert any(k.endswith("/train_state.pt") for k in objects) and any(k.endswith("/meta.json") for k in objects)

    experiment = _rest(mlflow_server, "experiments/get-by-name", experiment_name="s3-itest")["experiment"]
    (run,) = [r for r in _search_runs(mlflow_server, experiment["experiment_id"])
              if r["info"]["run_name"] == run_name]
    run_id = run["info"]["run_id"]
    history = _rest(mlflow_server, "metrics/get-history", run_id=run_id, metric_key="loss/G")["metrics"]
    assert sorted(m["step"] for m in history) == [4, 8, 12, 16, 20, 24]  # 800 // 64 = 12 steps per epoch
    # Every epoch reads every shard once: the cut shard shows up once per epoch with its 70 missing samples.
    assert [m["value"] for m in _history(mlflow_server, run_id, "data/bad_shards")] == [1, 1]
    assert [m["value"] for m in _history(mlflow_server, run_id, "data/skipped_samples")] == [70, 70]
    artifacts = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="mlartifacts/")["Contents"]]
    assert sum(run_id in k and "/images/samples" in k and k.endswith(".png") for k in artifacts) == 3
    # The run's logged generators (one per quality measurement) went through the server into the bucket too.
    models = logged_models(mlflow_server.url, run_id)
    assert models and all(any(f"/models/{m.model_id}/artifacts/" in k and k.endswith("MLmodel") for k in artifacts)
                          for m in models)

    # No secret in the job's output, the run's params and tags, or the checkpoint's metadata.
    assert S3_SECRET_KEY not in output
    data = run["data"]
    assert all(S3_SECRET_KEY not in str(item.get("value")) for item in data.get("params", []) + data.get("tags", []))
    meta_key = next(k for k in objects if k.endswith("/meta.json"))
    assert S3_SECRET_KEY.encode() not in client.get_object(Bucket=BUCKET, Key=meta_key)["Body"].read()


def _history(server, run_id: str, key: str) -> list[dict]:
    metrics = _rest(server, "metrics/get-history", run_id=run_id, metric_key=key)["metrics"]
    return sorted(metrics, key=lambda m: m["step"])


def _search_runs(server, experiment_id: str) -> list[dict]:
    request = urllib.request.Request(f"{server.url}/api/2.0/mlflow/runs/search", method="POST",
                                     data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["runs"]
