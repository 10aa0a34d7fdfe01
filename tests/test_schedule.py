"""The schedule in images: ticks every --tick-kimg and at epoch ends (a run counted in kimg groups short epochs whole
into ticks), bounded by --kimg or --epochs, and a resume that continues mid-epoch with the batches an uninterrupted run
would have taken."""
import math

import pytest
import torch

from gan.shards.batches import BatchStream, plan_epoch, rank_batches
from gan.shards.manifest import ShardInfo, read_manifest
from gan.training.schedule import build_schedule

SHARDS = [ShardInfo(f"train-{i:06d}.tar", 100, "") for i in range(10)]  # 1,000 images


def test_a_run_counted_in_kimg_groups_short_epochs_whole_into_ticks_of_about_tick_kimg():
    # Global batch 32: 10-step ticks (0.32 kimg); 100 images make 3-step epochs (50 a rank, 16 a step).
    small = [ShardInfo(f"train-{i:06d}.tar", 25, "") for i in range(4)]
    per_epoch = plan_epoch(small, 2, 16, 0, 0).steps
    schedule = build_schedule(small, 2, 16, 0, 0, epochs=0, kimg=3.84, tick_kimg=0.32)  # 120 steps: 40 epochs
    assert per_epoch == 3 and schedule.total_steps == 40 * per_epoch
    assert all(segment.ends_epoch and segment.offset == 0 and segment.steps == per_epoch
               for tick in schedule.ticks for segment in tick.segments)
    # Each report comes at the first epoch end at least half a tick after the last one: 20 reports, not 40.
    assert len(schedule.ticks) == 20 and all(5 <= tick.steps <= 10 for tick in schedule.ticks)
    assert [tick.epochs_done for tick in schedule.ticks][-1] == 40
    # A run counted in epochs (sweeps: ASHA and PBT decide at epochs), or --tick-kimg 0, reports at every epoch end.
    for epochs, kimg, tick_kimg in ((40, 0, 0.32), (0, 3.84, 0)):
        ticks = build_schedule(small, 2, 16, 0, 0, epochs=epochs, kimg=kimg, tick_kimg=tick_kimg).ticks
        assert [tick.epochs_done for tick in ticks] == list(range(1, 41))


def test_kimg_bounds_the_run_and_ticks_fall_every_tick_kimg_and_at_epoch_ends():
    # Global batch 32: 0.2 kimg ticks are 7 steps; an epoch is 31 steps (500 images per rank // 16).
    schedule = build_schedule(SHARDS, 2, 16, 0, 0, epochs=0, kimg=2.0, tick_kimg=0.2)
    assert schedule.total_steps == math.ceil(2000 / 32)
    ends = [tick.end_step for tick in schedule.ticks]
    # Every 7 steps; epoch 1 ends at 31, 3 steps after the report at 28 (under half a tick): no report there, the
    # tick 28-35 spans the epoch end. Epoch 2 ends at 62, 6 steps after 56 but 1 step before the run's end (63):
    # no report there either, or the run would report (and measure) twice in two steps.
    assert ends == [7, 14, 21, 28, 35, 42, 49, 56, 63]
    assert [(s.epoch, s.steps, s.ends_epoch) for s in schedule.ticks[-1].segments] == [(1, 6, True), (2, 1, False)]
    spanning = schedule.ticks[4]
    assert [(s.epoch, s.offset, s.steps, s.ends_epoch) for s in spanning.segments] == [(0, 28, 3, True),
                                                                                      (1, 0, 4, False)]
    assert [t.index for t in schedule.ticks] == list(range(1, len(ends) + 1))
    # Every epoch's segments start at 0 and add up to its planned steps.
    segments = [s for t in schedule.ticks for s in t.segments]
    for epoch in (0, 1):
        mine = [s for s in segments if s.epoch == epoch]
        assert mine[0].offset == 0 and all(a.offset + a.steps == b.offset for a, b in zip(mine, mine[1:]))
        assert sum(s.steps for s in mine) == plan_epoch(SHARDS, 2, 16, epoch, 0).steps


def test_a_run_counted_in_epochs_reports_every_epoch_end_and_no_stub_tick_follows_one():
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
    assert left[0].start_step == 3 and left[0].segments[0].offset == 3 and left[0].steps == 2
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
