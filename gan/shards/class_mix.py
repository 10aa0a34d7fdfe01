"""How well a shard set's classes are mixed: each shard's class histogram against its split's.

A rank reads its shards one after another through a shuffle buffer, so a shard that holds one class gives batches
of mostly one class (a 10-class folder written in listing order: 60% of a batch from one class, against 19% on
mixed shards) and halves the generator's quality. The writer shuffles every split; this check catches shard sets
written otherwise (older builds, other tools) before a run trains on them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gan.shards.manifest import ShardInfo

# Shards are "unmixed" when their mean distance from the split's class mix is this many times what shards of the
# same sizes drawn at random from the split show, plus a margin for tiny shards. Class-sorted shards score ~20x.
SKEW_TOLERANCE = 2.0
SKEW_MARGIN = 0.05


def class_histogram(labels: np.ndarray, num_classes: int) -> tuple[int, ...]:
    """Samples per class index; labels outside [0, num_classes) are not counted."""
    labels = np.asarray(labels)
    labels = labels[(labels >= 0) & (labels < num_classes)]
    return tuple(int(count) for count in np.bincount(labels, minlength=num_classes))


def beyond_chance(distance: float, random_distance: float) -> bool:
    """A class-mix distance too far above what random draws of the same sizes show (SKEW_TOLERANCE, SKEW_MARGIN)."""
    return distance > SKEW_TOLERANCE * random_distance + SKEW_MARGIN


def _labelled(shards: list[ShardInfo]) -> bool:
    """Shards whose class mix can be judged: histograms recorded, and at least two classes."""
    return bool(shards) and all(shard.classes is not None for shard in shards) and len(shards[0].classes) >= 2


def _distance(counts: np.ndarray, shares: np.ndarray) -> float:
    """Total-variation distance between a shard's class shares and the split's."""
    return 0.5 * float(np.abs(counts / max(1, counts.sum()) - shares).sum())


@dataclass(frozen=True)
class ClassMix:
    shards: int
    mean_distance: float  # from the split's class shares, averaged over shards
    random_distance: float  # the same for shards of the same sizes drawn at random from the split
    fewest_classes: int  # classes present in the least mixed shard

    @property
    def skewed(self) -> bool:
        return beyond_chance(self.mean_distance, self.random_distance)

    def describe(self) -> str:
        return (f"shards differ from their split's class mix by {self.mean_distance:.2f} on average (total "
                f"variation; shards drawn at random would show {self.random_distance:.2f}); the least mixed holds "
                f"{self.fewest_classes} classes")


def class_mix(shards: list[ShardInfo], seed: int = 0) -> ClassMix | None:
    """The split's mix, or None when there is nothing to judge: fewer than two classes, or shards written before
    histograms were recorded."""
    if not _labelled(shards):
        return None
    counts = np.array([shard.classes for shard in shards], dtype=np.int64)
    shares = counts.sum(0) / max(1, counts.sum())
    rng = np.random.default_rng(seed)
    random = [_distance(rng.multinomial(max(1, int(row.sum())), shares), shares) for row in counts for _ in range(4)]
    return ClassMix(len(shards), float(np.mean([_distance(row, shares) for row in counts])), float(np.mean(random)),
                    int(min((row > 0).sum() for row in counts)))


@dataclass(frozen=True)
class HoldoutMix:
    distance: float  # the holdout's class shares from the train split's (total variation)
    random_distance: float  # the same for a holdout of its size drawn at random
    classes: int  # classes present in the holdout, of `of`
    of: int

    @property
    def skewed(self) -> bool:
        return beyond_chance(self.distance, self.random_distance)

    def describe(self) -> str:
        return (f"the holdout's class mix differs from the train split's by {self.distance:.2f} (total variation; a "
                f"random holdout of its size would show {self.random_distance:.2f}) and holds {self.classes} of "
                f"{self.of} classes, so the floor and every quality metric would measure against a few classes")


def holdout_mix(train: list[ShardInfo], holdout: list[ShardInfo], seed: int = 0) -> HoldoutMix | None:
    """How far the holdout's classes are from train's (whole shards held out of class-sorted shards hold few
    classes); None when there is nothing to judge."""
    if not (_labelled(train) and _labelled(holdout)):  # no simulation of train's mix just to ask this
        return None
    train_counts = np.array([shard.classes for shard in train], dtype=np.int64).sum(0)
    counts = np.array([shard.classes for shard in holdout], dtype=np.int64).sum(0)
    shares = train_counts / max(1, train_counts.sum())
    rng = np.random.default_rng(seed)
    random = np.mean([_distance(rng.multinomial(max(1, int(counts.sum())), shares), shares) for _ in range(8)])
    return HoldoutMix(_distance(counts, shares), float(random), int((counts > 0).sum()), len(counts))
