"""Batches from loader processes (torch DataLoader workers): the same number of steps as in-process loading, every
sample from the rank's own shards, bad data counted across processes, and strict errors reaching the trainer."""
import numpy as np
import pytest

from gan.shards.batches import plan_epoch, rank_batches
from gan.shards.loader_processes import process_batches
from gan.shards.manifest import read_manifest
from gan.shards.reader import DataError, DataHealth, ReadPolicy
from gan.shards.sources import ImageSet
from gan.shards.writer import write_shards


@pytest.fixture(scope="module")
def numbered_shards(tmp_path_factory):
    """1,000 random images, each carrying its index in its first two pixels, in ten 100-image shards."""
    images = np.random.default_rng(0).integers(0, 256, (1000, 32, 32, 1), dtype=np.uint8)
    images[:, 0, 0, 0], images[:, 0, 1, 0] = np.arange(1000) // 256, np.arange(1000) % 256
    out = tmp_path_factory.mktemp("numbered")
    write_shards(ImageSet(images, np.arange(1000) % 10, [str(i) for i in range(10)], "numbered"), str(out),
                 samples_per_shard=100, holdout_fraction=0.0, seed=0)
    return out


def _indices(images) -> list[int]:
    return (images[:, 0, 0, 0].int() * 256 + images[:, 0, 0, 1].int()).tolist()


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")  # three on two cores, on purpose
def test_loader_processes_give_the_planned_steps_of_distinct_samples_from_the_rank_s_own_shards(numbered_shards):
    manifest = read_manifest(str(numbered_shards))
    plan = plan_epoch(manifest.shards("train"), world_size=2, batch_size=50, epoch=0, seed=0)
    rank_indices = set()
    for images, _ in rank_batches(str(numbered_shards), plan, 1, manifest.image_spec, 1, 0):
        rank_indices.update(_indices(images))
    assert len(rank_indices) == plan.samples_on(1) == 500  # rank 1's five shards, read in this process
    health = DataHealth()
    batches = list(process_batches(str(numbered_shards), plan, 1, manifest.image_spec, 100, 0, health, ReadPolicy(),
                                   processes=3))
    assert len(batches) == plan.steps == 10
    assert all(images.shape == (50, 1, 32, 32) and labels.shape == (50,) for images, labels in batches)
    delivered = [index for images, _ in batches for index in _indices(images)]
    assert len(set(delivered)) == len(delivered) == 500 and set(delivered) == rank_indices
    assert health.delivered >= 500 and health.skipped_samples == 0


def test_bad_samples_read_in_loader_processes_are_counted_in_the_rank_s_health(raw_shard_with_bad_samples):
    root, shard = raw_shard_with_bad_samples  # six good samples, then three bad ones
    manifest = read_manifest(str(root))
    plan = plan_epoch([shard], world_size=1, batch_size=2, epoch=0, seed=0)
    health = DataHealth()
    batches = list(process_batches(str(root), plan, 0, manifest.image_spec, 1, 0, health, ReadPolicy(),
                                   processes=2))
    # Three batches from the first pass; the fourth comes from the second, after the three bad samples were skipped.
    assert len(batches) == plan.steps == 4 and health.skipped_samples == 3


def test_a_strict_run_fails_with_the_loader_process_s_error_naming_the_sample(raw_shard_with_bad_samples):
    root, shard = raw_shard_with_bad_samples
    manifest = read_manifest(str(root))
    plan = plan_epoch([shard], world_size=1, batch_size=2, epoch=0, seed=0)
    with pytest.raises(DataError, match=r"sample short of .*raw image holds 1023 bytes"):
        list(process_batches(str(root), plan, 0, manifest.image_spec, 1, 0, DataHealth(),
                             ReadPolicy(strict=True), processes=1))


def test_quotas_add_up_to_the_plan_trimming_the_largest_and_topping_up_from_the_largest_leftovers():
    from gan.shards.loader_processes import batch_quotas

    assert batch_quotas([200, 200, 100], 50, 10) == [4, 4, 2]  # the shares fill the plan exactly
    assert batch_quotas([300, 200], 50, 7) == [3, 4]  # this rank holds more than the smallest rank: trimmed
    assert batch_quotas([150, 180], 100, 3) == [1, 2]  # the split left 50 + 80: one more batch, from 80's pass
    assert batch_quotas([150, 30, 120], 100, 3) == [2, 0, 1]  # a share below one batch never gets a quota
