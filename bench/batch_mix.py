"""How mixed a shard set's classes are, in its shards and in the batches a rank trains on.

For each shard set: the fewest classes any shard holds (from shards.json's histograms), the shards' distance from
their split's class mix against random shards' (gan/shards/class_mix.py), and over rank 0's first batches of a
2-rank run at the default batch size and shuffle buffer, the largest class's mean share of a batch and the mean
number of classes a batch holds.

    .venv/bin/python bench/batch_mix.py data/mnist data/mnist-folder-shards
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan.config import TrainConfig  # noqa: E402
from gan.shards.batches import plan_epoch, rank_batches  # noqa: E402
from gan.shards.class_mix import class_mix  # noqa: E402
from gan.shards.manifest import read_manifest  # noqa: E402


def batch_mix(shards: str, batches: int, shuffle_buffer: int, world_size: int = 2, batch_size: int = 32,
              seed: int = 0) -> tuple[float, float]:
    """Over rank 0's first `batches` batches of epoch 0: the largest class's mean share of a batch, and the mean number
    of classes a batch holds."""
    manifest = read_manifest(shards)
    plan = plan_epoch(manifest.shards("train"), world_size, batch_size, 0, seed)
    shares, distinct = [], []
    stream = rank_batches(shards, plan, 0, manifest.image_spec, shuffle_buffer, seed)
    for _, labels in itertools.islice(stream, batches):
        counts = np.bincount(labels.numpy(), minlength=len(manifest.class_names))
        shares.append(counts.max() / counts.sum())
        distinct.append((counts > 0).sum())
    return float(np.mean(shares)), float(np.mean(distinct))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shards", nargs="+", help="shard set folders (or s3:// prefixes)")
    parser.add_argument("--batches", type=int, default=300)
    args = parser.parse_args()
    config = TrainConfig()
    print("| shards | fewest classes in a shard | distance from the split's mix (random shards) | largest class's "
          "share of a batch | classes in a batch |\n|---|---|---|---|---|")
    for shards in args.shards:
        mix = class_mix(read_manifest(shards).shards("train"))
        share, distinct = batch_mix(shards, args.batches, config.shuffle_buffer, config.num_workers,
                                    config.batch_size, config.seed)
        summary = (f"{mix.fewest_classes} | {mix.mean_distance:.3f} ({mix.random_distance:.3f})" if mix
                   else "? (no histograms) | ?")
        print(f"| {shards} | {summary} | {share:.0%} | {distinct:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
