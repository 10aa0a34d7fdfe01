"""Shards -> batches for one Ray Train rank: the epoch plan (which rank reads which shards, how many steps)
and the WebDataset pipeline (read tar, shuffle, decode with gan/shards/image_codec.py, batch as uint8; `normalise` to
[-1, 1] runs on the training device, so a GPU gets a quarter of the bytes and the CPU does not do the float math).

Knows nothing of Ray: callers pass rank and world size. Every rank takes exactly `plan.steps` steps, because
DDP hangs at the epoch end if one rank runs out of batches before the others.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import webdataset as wds

from gan.shards.image_codec import ImageSpec
from gan.shards.manifest import ManifestError, ShardInfo, shard_location
from gan.shards.reader import DataError, DataHealth, ReadPolicy, read_shard, skip_bad_sample


@dataclass(frozen=True)
class EpochPlan:
    shards_by_rank: tuple[tuple[ShardInfo, ...], ...]
    steps: int  # identical on every rank
    batch_size: int

    def samples_on(self, rank: int) -> int:
        return sum(shard.samples for shard in self.shards_by_rank[rank])

    @property
    def unused_samples(self) -> int:
        """Samples no rank reaches this epoch (tails that do not fill a whole step on every rank)."""
        return sum(self.samples_on(r) for r in range(len(self.shards_by_rank))) - self.steps * self.batch_size * len(
            self.shards_by_rank)


def plan_epoch(shards: list[ShardInfo], world_size: int, batch_size: int, epoch: int, seed: int,
               max_steps: int = 0) -> EpochPlan:
    """Deal the shards out to ranks, disjoint and balanced by sample count, in an order that changes every
    epoch (so the tail a rank cannot fill is a different one each epoch); all ranks compute the same plan."""
    if len(shards) < world_size:
        raise ManifestError(f"{len(shards)} training shards cannot feed {world_size} workers (each needs at least one): "
                            f"rebuild the shards with a smaller --samples-per-shard or lower --num-workers")
    assigned = deal_shards([shards[i] for i in np.random.default_rng([seed, epoch]).permutation(len(shards))],
                           world_size)
    loads = [sum(shard.samples for shard in part) for part in assigned]
    steps = min(loads) // batch_size
    if steps == 0:
        raise ManifestError(f"a worker gets only {min(loads)} samples per epoch, fewer than --batch-size {batch_size}: "
                            f"lower --batch-size or --num-workers, or add data")
    if max_steps:
        steps = min(steps, max_steps)
    return EpochPlan(tuple(tuple(a) for a in assigned), steps, batch_size)


def deal_shards(shards: list[ShardInfo], parts: int) -> list[list[ShardInfo]]:
    """Largest shard first, each to the part holding the fewest samples so far: parts balanced by sample count.
    The sort is stable, so equal sizes keep the order given (an epoch's shuffle)."""
    dealt: list[list[ShardInfo]] = [[] for _ in range(parts)]
    loads = [0] * parts
    for shard in sorted(shards, key=lambda shard: -shard.samples):
        part = loads.index(min(loads))
        dealt[part].append(shard)
        loads[part] += shard.samples
    return dealt


def planned_ranks_of(rank: int, world_size: int, planned: int) -> tuple[int, ...]:
    """Which shares of an epoch plan made for `planned` ranks this rank of a `world_size` group reads: every
    world_size-th, starting at its own. A group of any size then trains on exactly the planned batches, so an
    elastic run that lost a node keeps its global batch, its schedule and its place in the interrupted epoch."""
    if not 0 < world_size <= planned:
        raise ValueError(f"a group of {world_size} ranks cannot read a plan for {planned}")
    return tuple(range(rank, planned, world_size))


def share_weight(rank: int, world_size: int, planned: int) -> float:
    """What this rank's losses are scaled by so that DDP's plain average of the ranks' gradients is the gradient of
    the global batch's mean loss when ranks hold unequal shares (3 planned ranks on 2: 2/3 and 1/3 of the batch).
    1.0 when the shares are equal."""
    return len(planned_ranks_of(rank, world_size, planned)) * world_size / planned


def joined_batches(streams: list[Iterator[tuple[torch.Tensor, torch.Tensor]]]
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One batch from each planned share, concatenated: a rank standing in for several planned ranks."""
    if len(streams) == 1:
        yield from streams[0]
        return
    try:
        for parts in zip(*streams):
            yield torch.cat([images for images, _ in parts]), torch.cat([labels for _, labels in parts])
    finally:  # stop loader processes now, not at garbage collection, when the epoch ends early
        for stream in streams:
            getattr(stream, "close", lambda: None)()


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range of the generator's Tanh."""
    return images.float().div_(127.5).sub_(1.0)


def _collate(samples: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(np.stack([image for image, _ in samples]))
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return images, labels


def _shard_stream(root: str, shards: tuple[ShardInfo, ...], health: DataHealth, policy: ReadPolicy,
                  ours: bool) -> Iterator[dict]:
    """Raw samples of these shards, one pass; shards found bad earlier this epoch are not read again. `ours`: written
    by jobs.make_shards (not indexed from another tool's)."""
    for shard in shards:
        url = shard_location(root, shard)
        if url not in health.bad_urls:
            yield from read_shard(url, shard, health, policy, ours)


def rank_samples(root: str, shards: tuple[ShardInfo, ...], spec: ImageSpec, shuffle_buffer: int, seed: int,
                 health: DataHealth | None = None, policy: ReadPolicy = ReadPolicy()) -> wds.DataPipeline:
    """Decoded (image, label, key) samples from one pass over these shards, shuffled within a buffer; bad shards and
    bad samples are counted in `health` and skipped (or raise DataError under policy.strict)."""
    health = health if health is not None else DataHealth()
    skip = skip_bad_sample(health, policy)

    def decode(sample: dict) -> tuple[np.ndarray, int, str]:
        try:
            return (*spec.decode_sample(sample), sample["__key__"])
        except Exception as error:  # name the sample: the handler counts it, or fails with this under --strict
            raise ValueError(f"sample {sample.get('__key__')} of {sample.get('__url__')}: "
                             f"{type(error).__name__}: {error}") from error

    return wds.DataPipeline(
        lambda: _shard_stream(root, shards, health, policy, ours=not spec.fitted),
        wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 100), rng=random.Random(seed), handler=skip),
        wds.map(decode, handler=skip),
    )


def cycling_batches(root: str, shards: tuple[ShardInfo, ...], spec: ImageSpec, batch_size: int,
                    shuffle_buffer: int, seed: int, health: DataHealth, policy: ReadPolicy,
                    reader: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Full batches of (uint8 images (B, C, H, W), labels) from pass after pass over these shards, each pass
    reshuffled, until the caller stops; a pass that yields no batch at all ends it with the reasons (`reader`, e.g.
    "rank 1", says whose)."""
    for pass_number in itertools.count():
        samples = rank_samples(root, shards, spec, shuffle_buffer, seed + pass_number, health, policy)
        batches = samples.compose(wds.map(lambda s: (s[0], s[1])),
                                  wds.batched(batch_size, collation_fn=_collate, partial=False))
        produced = 0
        for batch in batches:
            yield batch
            produced += 1
        if produced == 0:
            reasons = "; ".join(health.problems[-3:]) or "the shards hold fewer samples than one batch"
            raise DataError(f"no full batch from {len(shards)} shards under {root} for {reader}: {reasons}")


def rank_batches(root: str, plan: EpochPlan, rank: int, spec: ImageSpec, shuffle_buffer: int, seed: int,
                 health: DataHealth | None = None,
                 policy: ReadPolicy = ReadPolicy()) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Exactly plan.steps batches for this rank, read and decoded in this process.

    Normally one pass over the rank's shards; when bad shards or samples leave it short, its good shards are read
    again until the steps are filled (a rank that simply stopped would hang the other ranks at DDP's next
    all-reduce)."""
    health = health if health is not None else DataHealth()
    yield from itertools.islice(cycling_batches(root, plan.shards_by_rank[rank], spec, plan.batch_size,
                                                shuffle_buffer, seed, health, policy, f"rank {rank}"), plan.steps)


class BatchStream:
    """Batches tick after tick: one data epoch's iterator is kept across the ticks that share that epoch, and a tick
    that starts inside an epoch with no iterator open (a resume from a mid-epoch checkpoint) re-deals that epoch and
    skips the batches already trained on, so a resumed run sees the same batches as an uninterrupted one.

    `open_epoch(epoch, health)` returns that epoch's exactly-planned batches (rank_batches or loader processes),
    counting bad data in `health`, which lives as long as the epoch (bad shards are not read again within it)."""

    def __init__(self, open_epoch):
        self._open_epoch = open_epoch
        self._epoch, self._position, self._batches = -1, 0, iter(())
        self.health = DataHealth()

    def take(self, epoch: int, offset: int, steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if (epoch, offset) != (self._epoch, self._position):
            getattr(self._batches, "close", lambda: None)()
            self.health = DataHealth()
            self._batches, self._epoch, self._position = self._open_epoch(epoch, self.health), epoch, 0
            for _ in itertools.islice(self._batches, offset):
                self._position += 1
        for batch in itertools.islice(self._batches, steps):
            self._position += 1
            yield batch

    def take_segments(self, segments) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of a tick's segments (gan/training/schedule.py), one epoch's span after another."""
        for segment in segments:
            yield from self.take(segment.epoch, segment.offset, segment.steps)
