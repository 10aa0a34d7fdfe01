"""One rank's batches read and decoded by N loader processes (torch DataLoader workers) instead of the training
process: for GPUs, where one process's WebDataset tar walk (~15k samples/s here at 32x32x1) is below what a card
consumes, and the training process should only launch kernels.

Each loader process reads its own share of the rank's shards (balanced by sample count) and delivers a quota of
batches; the quotas add up to plan.steps, so every rank still takes the same number of steps (DDP). A quota is
what its share fills, except that the few samples each share leaves short of a whole batch can add up to batches
that in-process loading would have made: a process with such a batch in its quota takes it from its share's next
pass (reshuffled), repeating up to one batch per process rather than taking a step fewer. Bad shards and samples are
counted in each loader process and summed into the rank's DataHealth.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from gan.shards.batches import EpochPlan, cycling_batches, deal_shards
from gan.shards.image_codec import ImageSpec
from gan.shards.manifest import ShardInfo
from gan.shards.reader import DataHealth, ReadPolicy

_COUNTED = ("bad_shards", "skipped_samples", "read_retries", "delivered")


@dataclass
class _LoaderShares(IterableDataset):
    """Loader process i yields quotas[i] batches from shares[i], each as (images, labels, i, its DataHealth counts
    so far)."""

    root: str
    shares: list[tuple[ShardInfo, ...]]
    quotas: list[int]
    spec: ImageSpec
    batch_size: int
    shuffle_buffer: int
    seed: int
    policy: ReadPolicy
    rank: int

    def __iter__(self):
        loader = get_worker_info().id
        health = DataHealth()
        batches = cycling_batches(self.root, self.shares[loader], self.spec, self.batch_size, self.shuffle_buffer,
                                  self.seed + 7919 * loader, health, self.policy,
                                  f"rank {self.rank}, loader process {loader}")
        for images, labels in itertools.islice(batches, self.quotas[loader]):
            yield images, labels, loader, tuple(getattr(health, name) for name in _COUNTED)


def batch_quotas(share_samples: list[int], batch_size: int, steps: int) -> list[int]:
    """Batches per share, adding up to `steps`: what each share fills, trimmed from the largest when the rank holds
    more than the plan takes, topped up from the largest leftovers when splitting left batches short."""
    quotas = [samples // batch_size for samples in share_samples]
    while sum(quotas) > steps:
        quotas[quotas.index(max(quotas))] -= 1
    able = sorted((i for i, samples in enumerate(share_samples) if samples >= batch_size),
                  key=lambda i: -(share_samples[i] % batch_size))
    for i in itertools.islice(itertools.cycle(able), max(0, steps - sum(quotas))):
        quotas[i] += 1
    return quotas


def process_batches(root: str, plan: EpochPlan, rank: int, spec: ImageSpec, shuffle_buffer: int, seed: int,
                    health: DataHealth, policy: ReadPolicy, processes: int,
                    pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Exactly plan.steps batches for this rank, from as many loader processes as it has shards and whole batches,
    up to `processes`."""
    shards = plan.shards_by_rank[rank]
    count = min(processes, len(shards), plan.samples_on(rank) // plan.batch_size)
    shares = [tuple(share) for share in deal_shards(list(shards), count)]
    quotas = batch_quotas([sum(shard.samples for shard in share) for share in shares], plan.batch_size, plan.steps)
    dataset = _LoaderShares(root, shares, quotas, spec, plan.batch_size, shuffle_buffer, seed, policy, rank)
    loader = DataLoader(dataset, batch_size=None, num_workers=count, pin_memory=pin_memory, prefetch_factor=4)
    base = {name: getattr(health, name) for name in _COUNTED}
    latest: dict[int, tuple[int, ...]] = {}
    batches = iter(loader)
    try:
        for images, labels, process, counts in itertools.islice(batches, plan.steps):
            latest[process] = counts
            for index, name in enumerate(_COUNTED):
                setattr(health, name, base[name] + sum(c[index] for c in latest.values()))
            yield images, labels
    finally:
        batches._shutdown_workers()  # stop them now, not at garbage collection, when the epoch ends early
