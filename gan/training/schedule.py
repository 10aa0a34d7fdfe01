"""A run's length and its report points ("ticks"), counted in images as StyleGAN2-ADA counts kimg, so one config
means the same on 400 images and on 10 million.

A run ends at --kimg thousand images or after --epochs data epochs, whichever comes first (either may be 0 = no
bound). It reports (progress line, metrics, sample grid, checkpoint, one `ray.train.report` per rank) every
--tick-kimg thousand images, so a long epoch (MNIST: 60,000 images) reports several times inside it, and at epoch
ends: at every one when the run is counted in epochs (--epochs given, as sweeps are: ASHA and PBT decide there) or
--tick-kimg is 0; otherwise only at one half a tick or more after the last report and before the run's end. A
run counted in kimg on a small set (400 images: 300 epochs in the default 120 kimg) thus groups whole epochs into
ticks of about --tick-kimg instead of reporting hundreds of times. A boundary less than half a tick after an
epoch-end report is skipped, so no stub tick follows one. Epochs stay what the data reader deals shards by
(gan/shards/batches.py). Pure arithmetic: every rank computes the same ticks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from gan.shards.batches import plan_epoch
from gan.shards.manifest import ShardInfo


@dataclass(frozen=True)
class Segment:
    """Consecutive steps of one data epoch inside a tick."""

    epoch: int  # the data epoch (0-based) whose batches these are
    offset: int  # steps of that epoch taken before this segment
    steps: int
    ends_epoch: bool


@dataclass(frozen=True)
class Tick:
    index: int  # 1-based report number
    segments: tuple[Segment, ...]  # one, unless a kimg-counted run groups short epochs
    start_step: int  # global optimiser steps completed before this tick

    @property
    def steps(self) -> int:
        return sum(segment.steps for segment in self.segments)

    @property
    def end_step(self) -> int:
        return self.start_step + self.steps

    @property
    def epochs_done(self) -> int:
        """Data epochs complete once this tick has run."""
        last = self.segments[-1]
        return last.epoch + 1 if last.ends_epoch else last.epoch


@dataclass(frozen=True)
class Schedule:
    ticks: tuple[Tick, ...]
    images_per_step: int  # the global batch

    @property
    def total_steps(self) -> int:
        return self.ticks[-1].end_step if self.ticks else 0

    def remaining(self, step: int) -> list[Tick]:
        """The ticks still to run after a checkpoint at global `step`; a tick the step falls inside (the tick length
        changed between a run and its resume) keeps only its untaken steps."""
        left = []
        for tick in self.ticks:
            if tick.end_step <= step:
                continue
            taken, segments = max(0, step - tick.start_step), []
            for segment in tick.segments:
                skip = min(taken, segment.steps)
                taken -= skip
                if skip < segment.steps:
                    segments.append(replace(segment, offset=segment.offset + skip, steps=segment.steps - skip))
            left.append(replace(tick, segments=tuple(segments), start_step=max(step, tick.start_step)))
        return left


def build_schedule(shards: list[ShardInfo], world_size: int, batch_size: int, seed: int, steps_per_epoch: int,
                   epochs: int, kimg: float, tick_kimg: float) -> Schedule:
    """Every tick of the run. `tick_kimg` 0 = one report per epoch; `epochs` or `kimg` 0 = that bound is off."""
    if not epochs and not kimg:
        raise ValueError("a run needs a length: --kimg or --epochs")
    images_per_step = batch_size * world_size
    limit = math.ceil(kimg * 1000 / images_per_step) if kimg else math.inf
    tick_steps = max(1, math.ceil(tick_kimg * 1000 / images_per_step)) if tick_kimg else 0
    ticks: list[Tick] = []
    segments: list[Segment] = []
    step, epoch, tick_start = 0, 0, 0
    every_epoch = bool(epochs) or not tick_steps

    def next_boundary() -> float:
        """The first multiple of tick_steps at least half a tick after the last report."""
        if not tick_steps:
            return math.inf
        boundary = (step // tick_steps + 1) * tick_steps
        return boundary + tick_steps if boundary - tick_start < tick_steps / 2 else boundary

    while step < limit and (not epochs or epoch < epochs):
        epoch_steps = plan_epoch(shards, world_size, batch_size, epoch, seed, steps_per_epoch).steps
        offset = 0
        while offset < epoch_steps and step < limit:
            steps = int(min(epoch_steps - offset, limit - step, next_boundary() - step))
            ends_epoch = offset + steps == epoch_steps
            segments.append(Segment(epoch, offset, steps, ends_epoch))
            offset, step = offset + steps, step + steps
            last = step >= limit or (ends_epoch and epochs and epoch + 1 == epochs)
            at_boundary = tick_steps and step % tick_steps == 0 and step - tick_start >= tick_steps / 2
            # An epoch end within half a tick of the run's end is not reported: the last report, moments later,
            # covers it (120 kimg on MNIST ends 1 step after epoch 2, which measured the generator twice).
            spaced = step - tick_start >= tick_steps / 2 and limit - step >= tick_steps / 2
            if last or at_boundary or (ends_epoch and (every_epoch or spaced)):
                ticks.append(Tick(len(ticks) + 1, tuple(segments), tick_start))
                segments, tick_start = [], step
        epoch += 1
    return Schedule(tuple(ticks), images_per_step)
