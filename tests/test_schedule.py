"""The schedule in images: ticks every --tick-kimg and at every epoch end, bounded by --kimg or --epochs, and a
resume that continues mid-epoch with the batches an uninterrupted run would have taken."""
import math

import pytest
import torch

from gan.shards.batches import BatchStream, plan_epoch, rank_batches
from gan.shards.manifest import ShardInfo, read_manifest
from gan.training.schedule import build_schedule

SHARDS = [ShardInfo(f"train-{i:06d}.tar", 100, "") for i in range(10)]  # 1,000 images


def test_ticks_longer_than_an_epoch_report_once_per_epoch_as_before():
    schedule = build_schedule(SHARDS, 2, 16, 0, 0, epochs=3, kimg=0, tick_kimg=10)
    per_epoch = [plan_epoch(SHARDS, 2, 16, epoch, 0).steps for epoch in range(3)]
    assert [tick.steps for tick in schedule.ticks] == per_epoch
    assert [tick.epoch for tick in schedule.ticks] == [0, 1, 2] and all(t.ends_epoch for t in schedule.ticks)


def test_kimg_bounds_the_run_and_ticks_fall_every_tick_kimg_and_at_epoch_ends():
    # Global batch 32: 0.2 kimg ticks are 7 steps; an epoch is 31 steps (500 images per rank // 16).
    schedule = build_schedule(SHARDS, 2, 16, 0, 0, epochs=0, kimg=2.0, tick_kimg=0.2)
    assert schedule.total_steps == math.ceil(2000 / 32)
    ends = [tick.end_step for tick in schedule.ticks]
    epoch_ends = {t.end_step for t in schedule.ticks if t.ends_epoch}
    # Every 7 steps and at the epoch ends (31, 62) and the end (63); 63 is also a boundary, 1 step after epoch 2.
    assert ends == sorted(set(range(7, schedule.total_steps, 7)) | epoch_ends | {schedule.total_steps})
    assert epoch_ends == {31, 62}
    assert [t.index for t in schedule.ticks] == list(range(1, len(ends) + 1))
    # Offsets restart at each epoch and add up to the epoch's planned steps.
    for epoch in {t.epoch for t in schedule.ticks[:-1]}:
        ticks = [t for t in schedule.ticks if t.epoch == epoch]
        assert ticks[0].offset == 0 and all(a.offset + a.steps == b.offset for a, b in zip(ticks, ticks[1:]))


def test_no_stub_tick_follows_an_epoch_end():
    # 30-step epochs, 7-step ticks: the boundary at 35 is kept (5 steps after epoch 1's end is not under half a
    # tick) but 63 is skipped (3 steps after epoch 2's end at 60), so the next tick ends at 70.
    shards = [ShardInfo(f"train-{i:06d}.tar", 100, "") for i in range(3)]
    schedule = build_schedule(shards, 1, 10, 0, 0, epochs=3, kimg=0, tick_kimg=0.07)
    assert [t.end_step for t in schedule.ticks] == [7, 14, 21, 28, 30, 35, 42, 49, 56, 60, 70, 77, 84, 90]


def test_whichever_bound_comes_first_ends_the_run():
    by_epochs = build_schedule(SHARDS, 2, 16, 0, 0, epochs=2, kimg=100.0, tick_kimg=0)
    by_kimg = build_schedule(SHARDS, 2, 16, 0, 0, epochs=100, kimg=0.5, tick_kimg=0)
    assert by_epochs.total_steps == sum(plan_epoch(SHARDS, 2, 16, e, 0).steps for e in range(2))
    assert by_kimg.total_steps == math.ceil(500 / 32)
    with pytest.raises(ValueError, match="--kimg or --epochs"):
        build_schedule(SHARDS, 2, 16, 0, 0, epochs=0, kimg=0, tick_kimg=0)


def test_a_resume_continues_from_the_checkpoint_step_even_if_the_tick_length_changed():
    before = build_schedule(SHARDS, 1, 10, 0, 0, epochs=2, kimg=0, tick_kimg=0.03)  # 3-step ticks
    after = build_schedule(SHARDS, 1, 10, 0, 0, epochs=2, kimg=0, tick_kimg=0.05)  # resumed with 5-step ticks
    left = after.remaining(before.ticks[0].end_step)  # checkpoint at step 3
    assert left[0].start_step == 3 and left[0].offset == 3 and left[0].steps == 2
    assert sum(t.steps for t in left) == after.total_steps - 3


def test_batches_resumed_mid_epoch_are_the_ones_an_uninterrupted_run_takes(digits_shards):
    manifest = read_manifest(str(digits_shards))
    plan = plan_epoch(manifest.shards("train"), 1, 32, 0, 0)

    def open_epoch(epoch, health):
        return rank_batches(str(digits_shards), plan, 0, manifest.image_spec, 200, seed=epoch, health=health)

    whole = [images for images, _ in BatchStream(open_epoch).take(0, 0, 12)]
    stream = BatchStream(open_epoch)
    first = [images for images, _ in stream.take(0, 0, 5)]
    rest = [images for images, _ in stream.take(0, 5, 7)]  # the same stream carries on
    resumed = [images for images, _ in BatchStream(open_epoch).take(0, 5, 7)]  # a fresh process after a restart
    assert all(torch.equal(a, b) for a, b in zip(whole, first + rest)) and len(first + rest) == 12
    assert all(torch.equal(a, b) for a, b in zip(whole[5:], resumed)) and len(resumed) == 7
