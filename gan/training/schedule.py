"""A run's length and its report points ("ticks"), counted in images as StyleGAN2-ADA counts kimg, so one config
means the same on 1,797 images and on 10 million.

A run ends at --kimg thousand images or after --epochs data epochs, whichever comes first (either may be 0 = no
bound). It reports (progress line, metrics, sample grid, checkpoint, one `ray.train.report` per rank) every
--tick-kimg thousand images and at the end of every data epoch, whichever comes first, so a short epoch (the digits)
still reports once per epoch as before and a long one (MNIST: 60,000 images) reports several times inside it. A tick
boundary less than half a tick after an epoch's start is skipped, so an epoch end is not followed by a stub tick.
Epochs stay what the data reader deals shards by (gan/shards/batches.py). Pure arithmetic: every rank computes the same ticks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from gan.shards.batches import plan_epoch
from gan.shards.manifest import ShardInfo


@dataclass(frozen=True)
class Tick:
    index: int  # 1-based report number
    epoch: int  # the data epoch (0-based) whose batches this tick trains on
    offset: int  # steps of that epoch taken before this tick
    steps: int
    start_step: int  # global optimiser steps completed before this tick
    ends_epoch: bool

    @property
    def end_step(self) -> int:
        return self.start_step + self.steps


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
            taken = max(0, step - tick.start_step)
            left.append(replace(tick, offset=tick.offset + taken, steps=tick.steps - taken,
                                start_step=tick.start_step + taken))
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
    step, epoch = 0, 0
    while step < limit and (not epochs or epoch < epochs):
        epoch_steps = plan_epoch(shards, world_size, batch_size, epoch, seed, steps_per_epoch).steps
        offset = 0
        while offset < epoch_steps and step < limit:
            steps = min(epoch_steps - offset, limit - step)
            if tick_steps:
                to_boundary = tick_steps - step % tick_steps
                if offset == 0 and to_boundary < tick_steps / 2:
                    to_boundary += tick_steps
                steps = min(steps, to_boundary)
            ticks.append(Tick(len(ticks) + 1, epoch, offset, int(steps), step, offset + steps == epoch_steps))
            offset, step = offset + steps, step + steps
        epoch += 1
    return Schedule(tuple(ticks), images_per_step)
