"""Shard writer and reader on real digits: manifest round trip, rank split, epoch plan, image folder source,
raw and PNG storage."""
import hashlib
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from gan.shards.batches import normalise, plan_epoch, rank_batches, rank_samples
from gan.shards.image_codec import ImageSpec
from gan.shards.manifest import Manifest, ManifestError, ShardInfo, read_manifest, write_manifest
from gan.shards.reader import DataError, DataHealth, ReadPolicy
from gan.shards.sources import ImageSet, load_digits, load_folder
from gan.shards.writer import write_shards


def test_manifest_matches_the_shards_on_disk(digits_shards):
    manifest = read_manifest(str(digits_shards))
    assert (manifest.resolution, manifest.channels, len(manifest.class_names)) == (32, 1, 10)
    assert manifest.sample_count("train") + manifest.sample_count("holdout") == 1797
    for split in ("train", "holdout"):
        for shard in manifest.shards(split):
            path = digits_shards / shard.name
            assert hashlib.sha256(path.read_bytes()).hexdigest() == shard.sha256
            with tarfile.open(path) as tar:
                assert len({m.name.split(".")[0] for m in tar.getmembers()}) == shard.samples


def test_digits_look_like_upsampled_digits():
    data = load_digits(32, 1)
    assert data.images.shape == (1797, 32, 32, 1) and data.images.dtype == np.uint8
    assert data.images.max() == 255 and data.images.min() == 0
    assert sorted(set(data.labels.tolist())) == list(range(10))


def test_two_ranks_read_every_training_sample_exactly_once(digits_shards):
    manifest = read_manifest(str(digits_shards))
    plan = plan_epoch(manifest.shards("train"), world_size=2, batch_size=64, epoch=3, seed=0)
    keys_by_rank = [[key for _, _, key in rank_samples(str(digits_shards), plan.shards_by_rank[rank],
                                                        manifest.image_spec, 50, seed=rank)]
                    for rank in (0, 1)]
    assert not set(keys_by_rank[0]) & set(keys_by_rank[1])
    every_key = keys_by_rank[0] + keys_by_rank[1]
    assert len(every_key) == len(set(every_key)) == manifest.sample_count("train")


def test_every_rank_gets_the_same_number_of_full_batches_that_normalise_to_the_tanh_range(digits_shards):
    manifest = read_manifest(str(digits_shards))
    plan = plan_epoch(manifest.shards("train"), world_size=2, batch_size=64, epoch=0, seed=0)
    counts = []
    for rank in (0, 1):
        batches = list(rank_batches(str(digits_shards), plan, rank, manifest.image_spec, shuffle_buffer=100,
                                    seed=rank))
        counts.append(len(batches))
        images, labels = batches[0]
        assert images.dtype == torch.uint8 and images.shape == (64, 1, 32, 32) and labels.shape == (64,)
        images = normalise(images)
        assert images.min() >= -1 and images.max() <= 1 and images.min() < -0.9 and images.max() > 0.9
    assert counts == [plan.steps, plan.steps] and plan.steps == min(map(plan.samples_on, (0, 1))) // 64


def test_uneven_shards_are_balanced_and_rotate_between_epochs():
    shards = [ShardInfo(f"s{i}", samples, "") for i, samples in enumerate([100] * 9 + [17, 250])]
    plans = [plan_epoch(shards, world_size=3, batch_size=10, epoch=e, seed=0) for e in range(3)]
    for plan in plans:
        loads = [plan.samples_on(rank) for rank in range(3)]
        assert sum(loads) == 1167 and max(loads) - min(loads) <= 100
        assert plan.steps == min(loads) // 10
    assert len({plan.shards_by_rank for plan in plans}) > 1


def test_plan_rejects_more_workers_than_shards_and_tiny_ranks():
    with pytest.raises(ManifestError, match="3 training shards cannot feed 4 workers"):
        plan_epoch([ShardInfo(str(i), 10, "") for i in range(3)], 4, 2, 0, 0)
    with pytest.raises(ManifestError, match="fewer than --batch-size 64"):
        plan_epoch([ShardInfo(str(i), 10, "") for i in range(3)], 2, 64, 0, 0)


def test_image_folder_with_class_subfolders_becomes_rgb_shards(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (tmp_path / "in" / label).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "in" / label / f"{i}.png")
    (tmp_path / "in" / "dogs" / "broken.jpg").write_bytes(b"not an image")
    data = load_folder(str(tmp_path / "in"), resolution=32, channels=3)
    assert data.images.shape == (12, 32, 32, 3) and data.class_names == ["cats", "dogs"]
    assert len(data.unreadable) == 1 and data.unreadable[0].startswith(f"{tmp_path / 'in' / 'dogs' / 'broken.jpg'}: ")
    assert "cannot identify image file" in data.unreadable[0]  # PIL's reason, named
    manifest = write_shards(data, str(tmp_path / "out"), samples_per_shard=4, holdout_fraction=0.25, seed=0)
    assert manifest.channels == 3 and [len(manifest.shards(s)) for s in ("train", "holdout")] == [3, 1]
    images = [image for image, _, _ in rank_samples(str(tmp_path / "out"), tuple(manifest.shards("train")),
                                                     manifest.image_spec, 1, 0)]
    assert len(images) == 9 and images[0].shape == (3, 32, 32)


def test_missing_manifest_says_how_to_make_one(tmp_path):
    with pytest.raises(ManifestError, match="jobs.make_shards --out"):
        read_manifest(str(tmp_path))


@pytest.mark.parametrize("channels", [1, 3])
def test_npy_raw_and_png_shards_give_back_the_written_pixels(tmp_path, channels):
    # Random pixels, different in every channel: a transposed or mixed-up layout could not pass.
    images = np.random.default_rng(channels).integers(0, 256, (40, 32, 32, channels), dtype=np.uint8)
    data = ImageSet(images, np.arange(40) % 4, ["a", "b", "c", "d"], "random")
    read_back = {}
    for image_format in ("npy", "raw", "png"):
        manifest = write_shards(data, str(tmp_path / image_format), samples_per_shard=16, holdout_fraction=0.0,
                                seed=0, image_format=image_format)
        assert read_manifest(str(tmp_path / image_format)).image_spec == ImageSpec(32, channels, image_format)
        samples = rank_samples(str(tmp_path / image_format), tuple(manifest.shards("train")), manifest.image_spec, 1, 0)
        read_back[image_format] = {key: (image, label) for image, label, key in samples}
    assert read_back["npy"].keys() == read_back["raw"].keys() == read_back["png"].keys()
    assert len(read_back["npy"]) == 40
    for key, (image, label) in read_back["npy"].items():
        index = int(key.split("-")[1])
        assert image.shape == (channels, 32, 32) and label == index % 4
        assert np.array_equal(image, images[index].transpose(2, 0, 1))
        assert np.array_equal(image, read_back["raw"][key][0]) and np.array_equal(image, read_back["png"][key][0])


def test_raw_images_of_the_wrong_size_or_format_are_counted_and_skipped_or_named_under_strict(
        raw_shard_with_bad_samples, caplog):
    root, shard = raw_shard_with_bad_samples
    spec = read_manifest(str(root)).image_spec
    health = DataHealth()
    keys = [key for _, _, key in rank_samples(str(root), (shard,), spec, 1, 0, health)]
    assert keys == [f"good-{i}" for i in range(6)] and health.skipped_samples == 3
    assert "sample png-in-raw-set of" in caplog.text
    assert "has no .raw member (has: png, cls), though shards.json says image_format raw" in caplog.text
    with pytest.raises(DataError, match=r"sample short of .*: ValueError: raw image holds 1023 bytes, shards promise "
                                        r"1x32x32 = 1024"):
        list(rank_samples(str(root), (shard,), spec, 1, 0, DataHealth(), ReadPolicy(strict=True)))


def test_a_manifest_with_an_unknown_image_format_says_to_rebuild(tmp_path):
    write_manifest(str(tmp_path), Manifest(32, 1, ["0"], {"train": [ShardInfo("a.tar", 1, "")]}, image_format="jpeg"))
    with pytest.raises(ManifestError, match="stores images as 'jpeg', this code reads npy, raw, png; rebuild"):
        read_manifest(str(tmp_path))
