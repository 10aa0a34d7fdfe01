"""Services that go away under a running job, settings that cannot work, and a run that diverges.

The object store is a real SeaweedFS of this module's own (it is stopped and started again), the tracking server a
real `mlflow server`; training is the real job in a subprocess.
"""
import subprocess
import sys
import time

import pytest
import torch

from gan.shards.batches import plan_epoch
from gan.shards.manifest import read_manifest
from gan.training.checkpoint import STATE_FILE
from tests.helpers import BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY, clean_env
from tests.job_runs import (complete_checkpoints, expected_steps, finish, start_training, steps_of, the_run,
    train_command, wait_for_checkpoint)
from tests.services import free_port, start_mlflow_server, start_seaweedfs

SHARDS = f"s3://{BUCKET}/digits"
# Narrow models: an outage here lands between epochs or inside one alike, so the full width buys nothing.
SMALL = ("--g-features", "16", "--d-features", "16")


@pytest.fixture(scope="module")
def store(digits_shards, tmp_path_factory):
    """A SeaweedFS holding the digit shards, uploaded by the real CLI."""
    server = start_seaweedfs(tmp_path_factory.mktemp("outage-store"), S3_ACCESS_KEY, S3_SECRET_KEY, buckets=(BUCKET,))
    upload = subprocess.run([sys.executable, "-m", "jobs.make_shards", "--upload-from", str(digits_shards), "--out", SHARDS],
                            capture_output=True, text=True, timeout=300, env={**clean_env(), **server.env})
    assert upload.returncode == 0, upload.stderr[-2000:]
    yield server
    server.stop()


def _values(client, run, metric: str) -> list[float]:
    return [m.value for m in client.get_metric_history(run.info.run_id, metric)]


@pytest.mark.slow
def test_a_short_object_store_outage_is_waited_out_and_the_run_finishes(store, digits_shards, tmp_path):
    driver = start_training(train_command(SHARDS, tmp_path, "blip", "--epochs", "3", *SMALL), tmp_path, env=store.env)
    wait_for_checkpoint(driver, tmp_path, "blip")
    store.stop()  # the whole store process, for longer than the rest of epoch 2: epoch 3's reads meet the outage
    time.sleep(10)
    store.start()
    assert finish(driver) == 0, (tmp_path / "train.err").read_text()[-3000:]
    client, run = the_run(tmp_path, "blip")
    assert sum(_values(client, run, "data/read_retries")) > 0  # it did wait for the store
    assert set(_values(client, run, "data/bad_shards")) == {0.0}  # and skipped nothing because of it
    assert steps_of(client, run, "epoch")[-1] == expected_steps(digits_shards, 3)
    assert "unreachable" in (tmp_path / "train.err").read_text()  # the wait is logged, not silent


@pytest.mark.slow
def test_a_store_gone_for_good_fails_the_run_in_bounded_time_naming_the_endpoint(store, tmp_path):
    driver = start_training(train_command(SHARDS, tmp_path, "gone", "--epochs", "6", "--store-outage-seconds", "10",
                                          "--max-failures", "0", *SMALL), tmp_path, env=store.env)
    wait_for_checkpoint(driver, tmp_path, "gone")
    store.stop()
    stopped = time.monotonic()
    try:
        returncode = finish(driver, timeout=300)
    finally:
        store.start()
    elapsed = time.monotonic() - stopped
    print(f"object store gone for good: the run failed {elapsed:.0f} s after the outage began")
    err = (tmp_path / "train.err").read_text()
    assert returncode == 1, err[-3000:]
    failure = next(line for line in err.splitlines() if line.startswith("train: failed:"))
    assert f"DataError: s3://{BUCKET}/digits/" in failure and f"(endpoint {store.url}): S3 endpoint unreachable" in failure
    assert "still unreachable after" in failure and "rerun with the same --run-name to resume" in failure
    # The stated bound: --store-outage-seconds, plus botocore's own retries of the last request and Ray's teardown.
    assert elapsed < 10 + 60, f"took {elapsed:.0f} s"
    client, run = the_run(tmp_path, "gone")
    assert run.info.status == "FAILED" and "unreachable" in run.data.tags["failure"]
    assert complete_checkpoints(tmp_path, "gone")  # what was saved before the outage is still there


@pytest.mark.slow
def test_training_goes_on_while_the_mlflow_server_is_down_and_no_metric_is_lost(digits_shards, tmp_path):
    server = start_mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", str(tmp_path / "artifacts"),
                                 tmp_path / "server.log")
    try:
        # MLflow's client retries with a backoff factor of 1 s instead of 2 s: the same 7 retries, over about two
        # minutes instead of four, still far longer than this outage, and the first retry after it comes sooner.
        driver = start_training(train_command(digits_shards, tmp_path, "offline", "--epochs", "4", "--tracking-uri",
                                              server.url, *SMALL), tmp_path,
                                env={"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"})
        wait_for_checkpoint(driver, tmp_path, "offline")
        server.stop()
        time.sleep(10)
        server.start()
        assert finish(driver) == 0, (tmp_path / "train.err").read_text()[-3000:]
        client, run = the_run(tmp_path, "offline", server.url)
        assert run.info.status == "FINISHED"
        # Every window's losses arrived (logged every 5 steps and at each epoch's end), none twice.
        train = read_manifest(str(digits_shards)).shards("train")
        expected, end = set(), 0
        for epoch in range(4):
            start, end = end, end + plan_epoch(train, 2, 16, epoch, 0, 0).steps
            expected |= {step for step in range(start + 1, end + 1) if step % 5 == 0} | {end}
        assert steps_of(client, run, "loss/G") == sorted(expected)
        grids = {a.path.split("+step+")[1].split("+")[0] for a in client.list_artifacts(run.info.run_id, "images")
                 if a.path.endswith(".png") and "+step+" in a.path}
        assert grids == {"0", "1", "2", "3", "4"}  # the sample grid of every epoch, the one during the outage too
        assert "tracking/failed_calls" not in run.data.metrics
    finally:
        server.stop()


def test_an_unreachable_tracking_server_is_rejected_before_training(digits_shards, capsys):
    from jobs.train import main

    started = time.monotonic()
    uri = f"http://alice:s3cr3t-pass@127.0.0.1:{free_port()}"
    assert main(["--shards", str(digits_shards), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "MLflow server unreachable" in err and "--no-tracking" in err and "s3cr3t-pass" not in err
    assert time.monotonic() - started < 30


def test_a_missing_checkpoint_bucket_is_rejected_before_training(s3_env, digits_shards, capsys):
    from jobs.train import main

    assert main(["--shards", str(digits_shards), "--no-tracking", "--storage-path", "s3://no-such-bucket/ray"]) == 2
    assert "bucket 'no-such-bucket' does not exist; create it or fix the s3:// URI" in capsys.readouterr().err


@pytest.mark.slow
def test_a_diverging_run_stops_is_marked_in_mlflow_and_keeps_its_last_good_checkpoint(digits_shards, tmp_path):
    first = subprocess.run(train_command(digits_shards, tmp_path, "nan", "--epochs", "1", *SMALL), cwd=tmp_path,
                           capture_output=True, text=True, timeout=600, env=clean_env())
    assert first.returncode == 0, first.stderr[-3000:]
    (good,) = complete_checkpoints(tmp_path, "nan")
    # A corrupted optimiser state (a negative second moment, as a flipped bit would leave): Adam's next update is
    # sqrt(-1) = NaN, so the weights and then the losses go NaN in the first steps of epoch 2.
    saved = torch.load(good / STATE_FILE, weights_only=True)
    for moments in saved["opt_g"]["state"].values():
        moments["exp_avg_sq"].fill_(-1.0)
    torch.save(saved, good / STATE_FILE)

    second = subprocess.run(train_command(digits_shards, tmp_path, "nan", "--epochs", "3", "--max-failures", "0",
                                          *SMALL), cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env=clean_env())
    assert second.returncode == 1
    failure = next(line for line in second.stderr.splitlines() if line.startswith("train: failed:"))
    assert "TrainingDiverged" in failure and "not finite at step" in failure, failure
    client, run = the_run(tmp_path, "nan")
    first_epoch = expected_steps(digits_shards, 1)
    assert run.info.status == "FAILED" and run.data.tags["status"] == "diverged"
    assert first_epoch < int(run.data.tags["diverged_at_step"]) <= first_epoch + 5
    assert complete_checkpoints(tmp_path, "nan") == [good]  # no checkpoint of the broken weights was written
    weights = torch.load(good / STATE_FILE, weights_only=True)["generator"]
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())
