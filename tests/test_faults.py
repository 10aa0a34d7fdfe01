"""Faults injected for real: a SIGKILLed Ray Train worker, a crash mid-checkpoint, an object store and an MLflow
server that go away, bad images inside good shards, bad settings, a diverging run, uneven shards.

Each slow test runs the real training job (`python -m jobs.train`) in a subprocess, which starts its own local Ray.
"""
import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from gan.shards.batches import rank_samples
from gan.shards.image_codec import ImageSpec, encode_image
from gan.shards.manifest import Manifest, ShardInfo, read_manifest, write_manifest
from gan.shards.reader import DataError, DataHealth, ReadPolicy
from gan.shards.sources import load_digits
from gan.shards.writer import split_indices, tar_bytes
from gan.training.checkpoint import META_FILE, STATE_FILE, load_checkpoint
from gan.training.models import ModelShape
from gan.training.state import TrainState
from tests.helpers import clean_env
from tests.job_runs import (complete_checkpoints, expected_steps, finish, start_training, steps_of, the_run,
    train_command, wait_for_checkpoint)

UNEVEN_SIZES = [7, 260, 33, 150, 91, 400, 12, 300, 200, 164]  # 1,617 training digits in very unequal shards
BAD_SHARD = 3  # holds one image of each bad kind below, among 145 good ones
PNG_32x32x1 = ImageSpec(32, 1, "png")  # these shards are PNG: bad PNGs are the many ways an image can be broken


def encode_png(image: np.ndarray) -> bytes:
    return encode_image(image, "png")


def _bad_images() -> dict[str, bytes]:
    good = encode_png(np.full((32, 32, 1), 200, np.uint8))
    return {"corrupt": b"\x89PNG\r\n\x1a\n this is not an image", "truncated": good[: len(good) // 2], "empty": b"",
            "wrong-size": encode_png(np.zeros((28, 28, 1), np.uint8)),
            "wrong-channels": encode_png(np.zeros((32, 32, 3), np.uint8))}


def write_uneven_shards_with_bad_images(out: Path) -> Manifest:
    """The digits in shards of very unequal sizes; shard BAD_SHARD carries five undecodable or misfit images."""
    data = load_digits(32, 1)
    indices = split_indices(len(data.images), 0.1, seed=0)
    manifest = Manifest(resolution=32, channels=1, class_names=data.class_names, source=data.source)
    bounds = np.cumsum([0, *UNEVEN_SIZES])
    assert bounds[-1] == len(indices["train"])
    groups = {"train": [indices["train"][a:b] for a, b in zip(bounds[:-1], bounds[1:])],
              "holdout": [indices["holdout"]]}
    out.mkdir(parents=True)
    for split, chunks in groups.items():
        manifest.splits[split] = []
        for number, chunk in enumerate(chunks):
            members = [(f"{split}-{i:07d}", encode_png(data.images[i]), int(data.labels[i])) for i in chunk]
            if split == "train" and number == BAD_SHARD:
                members[:5] = [(f"bad-{kind}", png, 0) for kind, png in _bad_images().items()]
            body = tar_bytes((key, "png", png, label) for key, png, label in members)
            name = f"{split}-{number:06d}.tar"
            (out / name).write_bytes(body)
            manifest.splits[split].append(ShardInfo(name, len(members), hashlib.sha256(body).hexdigest()))
    write_manifest(str(out), manifest)
    return manifest


# --- bad data -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def uneven_shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uneven") / "shards"
    write_uneven_shards_with_bad_images(out)
    return out


def test_bad_images_inside_a_good_shard_are_counted_and_skipped(uneven_shards):
    shard = read_manifest(str(uneven_shards)).shards("train")[BAD_SHARD]
    health = DataHealth()
    keys = [key for _, _, key in rank_samples(str(uneven_shards), (shard,), PNG_32x32x1, 10, 0, health)]
    assert len(keys) == 145 and not any(key.startswith("bad-") for key in keys)
    assert (health.skipped_samples, health.bad_shards) == (5, 0)


def test_bad_images_fail_a_strict_run_naming_the_sample(uneven_shards):
    shard = read_manifest(str(uneven_shards)).shards("train")[BAD_SHARD]
    with pytest.raises(DataError, match=r"bad sample: sample bad-corrupt of .*train-000003.tar"):
        list(rank_samples(str(uneven_shards), (shard,), PNG_32x32x1, 10, 0, DataHealth(),
                          ReadPolicy(strict=True)))


# --- a worker killed mid-epoch; a crash while a checkpoint is written -----------------------------------------------

@pytest.fixture(scope="module")
def killed_run(uneven_shards, tmp_path_factory):
    """3 epochs over the uneven shards; one Ray Train worker process is SIGKILLed in the middle of epoch 2."""
    work = tmp_path_factory.mktemp("killed")
    driver = start_training(train_command(uneven_shards, work, "killed", "--epochs", "3", "--max-failures", "1"), work)
    wait_for_checkpoint(driver, work, "killed")
    time.sleep(2.0)  # well inside epoch 2
    workers = [p for p in psutil.Process(driver.pid).children(recursive=True)
               if "RayTrainWorker" in " ".join(p.cmdline())]
    assert len(workers) == 2, [p.cmdline() for p in workers]
    killed_at = len(complete_checkpoints(work, "killed"))
    os.kill(workers[0].pid, signal.SIGKILL)
    return {"work": work, "returncode": finish(driver), "killed_after_checkpoints": killed_at}


@pytest.mark.slow
def test_a_killed_worker_restores_and_finishes_in_one_mlflow_run(killed_run, uneven_shards):
    work = killed_run["work"]
    assert killed_run["returncode"] == 0, (work / "train.err").read_text()[-3000:]
    assert killed_run["killed_after_checkpoints"] == 1  # the kill landed in epoch 2, after epoch 1's checkpoint
    client, run = the_run(work, "killed")
    assert run.info.status == "FINISHED"
    assert run.data.tags["restarts"] == "1" and run.data.tags["restored_from"].startswith("epoch 1 ")
    assert [m.value for m in client.get_metric_history(run.info.run_id, "fault/restarts")] == [1.0]
    # The same final step as an uninterrupted run: epoch 2 was redone from epoch 1's checkpoint, not skipped.
    total = expected_steps(uneven_shards, 3)
    assert run.data.metrics["epoch"] == 3 and steps_of(client, run, "epoch")[-1] == total
    assert json.loads((complete_checkpoints(work, "killed")[-1] / META_FILE).read_text())["step"] == total
    # Every series holds one value per step, though the kill came after epoch 2 had logged windows that the
    # restart trained again (ray#48664: duplicated epochs after restarts).
    for key in run.data.metrics:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert len(steps) == len(set(steps)), (key, sorted(steps))


@pytest.mark.slow
def test_the_console_shows_one_progress_line_per_report_and_no_ray_report_lines(killed_run):
    # The console is both streams: the workers' log lines reach the driver's stderr.
    out = (killed_run["work"] / "train.out").read_text() + (killed_run["work"] / "train.err").read_text()
    assert "Reporting training result" not in out  # Ray Train's own per-report lines, hidden without --verbose
    # Ticks 1..3, each once: rank 0 alone prints, and the tick the kill interrupted never reported.
    lines = [line for line in out.splitlines() if " tick " in line]
    assert [line.split(" tick ")[1].split()[0] for line in lines] == ["1/3", "2/3", "3/3"], lines


@pytest.mark.slow
def test_uneven_shards_and_bad_images_end_every_epoch_without_a_hang_and_are_counted(killed_run):
    client, run = the_run(killed_run["work"], "killed")
    assert steps_of(client, run, "epoch")  # every epoch ended on both ranks (a hang would have timed out)
    skipped = [m.value for m in client.get_metric_history(run.info.run_id, "data/skipped_samples")]
    assert 5.0 in skipped and set(skipped) <= {0.0, 5.0}  # an epoch that read the bad shard counted its 5 images
    assert all(m.value == 0 for m in client.get_metric_history(run.info.run_id, "data/bad_shards"))


@pytest.mark.slow
def test_resume_skips_a_checkpoint_left_half_written_by_a_crash(killed_run, uneven_shards):
    """What a crash during a checkpoint upload leaves: a newer checkpoint folder without its meta.json and with a
    cut-off state file. Ray Train resumes from the latest checkpoint it recorded as complete instead."""
    work = killed_run["work"]
    latest = complete_checkpoints(work, "killed")[-1]
    partial = latest.parent / "checkpoint_2099-12-31_23-59-59.999999"
    partial.mkdir()
    (partial / STATE_FILE).write_bytes((latest / STATE_FILE).read_bytes()[:1000])
    resumed = subprocess.run(train_command(uneven_shards, work, "killed", "--epochs", "4"), cwd=work,
                             capture_output=True, text=True, timeout=600, env=clean_env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client, run = the_run(work, "killed")
    assert run.data.tags["restarts"] == "2" and run.data.tags["restored_from"] == (
        f"epoch 3 step {expected_steps(uneven_shards, 3)}")
    assert steps_of(client, run, "epoch")[-1] == expected_steps(uneven_shards, 4)


def test_a_process_killed_while_writing_a_checkpoint_leaves_one_that_load_refuses(tmp_path):
    target = tmp_path / "checkpoint"
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys; from gan.training.checkpoint import save_checkpoint; from gan.training.models import ModelShape; "
        "from gan.training.state import TrainState; state = TrainState.create(ModelShape(64, 3, 100, 256, 256), 2e-4, 0.5, 0); "
        "save_checkpoint(state, sys.argv[1], {})"), str(target)])  # about 400 MB of weights and Adam state
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(f".{STATE_FILE}.") for p in target.glob(".*")):  # mid-write of the state
            assert time.monotonic() < deadline and writer.poll() is None, "the write finished before the kill"
            time.sleep(0.002)
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
    state = TrainState.create(ModelShape(64, 3, 100, 256, 256), 2e-4, 0.5, 0)
    with pytest.raises(FileNotFoundError, match="is incomplete"):
        load_checkpoint(state, target)


def test_a_checkpoint_with_pickled_code_is_refused_without_running_it(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    (tmp_path / STATE_FILE).write_bytes(pickle.dumps({"generator": Payload()}))
    (tmp_path / META_FILE).write_text("{}")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint(TrainState.create(ModelShape(32, 1, 8, 8, 8), 2e-4, 0.5, 0), tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_an_error_without_a_path_says_where_it_was_raised_and_if_the_working_directory_is_gone(tmp_path):
    import os

    from gan.run.worker import error_line

    def read_settings():
        raise FileNotFoundError(2, "No such file or directory")  # as os.getcwd() raises it: no filename

    gone = tmp_path / "unpacked-working-dir"
    gone.mkdir()
    here = os.getcwd()
    os.chdir(gone)
    try:
        gone.rmdir()
        try:
            read_settings()
        except FileNotFoundError as error:
            line = error_line(error)
    finally:
        os.chdir(here)
    assert line.startswith("FileNotFoundError: [Errno 2] No such file or directory (no path given; raised at ")
    assert f"{__file__}:" in line and "in read_settings" in line
    assert "working directory no longer exists" in line and "--temp-dir" in line
    with_path = FileNotFoundError(2, "No such file or directory", "/data/shards.json")
    assert error_line(with_path) == "FileNotFoundError: [Errno 2] No such file or directory: '/data/shards.json'"
