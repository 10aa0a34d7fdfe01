"""Entry point: a dataset (all of MNIST by default, the bundled 8x8 digits, or --from-folder DIR) -> WebDataset
shards + shards.json.

    python -m jobs.make_shards                      # data/mnist: 60,000 train / 10,000 holdout
    python -m jobs.make_shards --dataset digits     # data/digits: 1,617 / 180
    python -m jobs.make_shards --from-folder ~/celeba --resolution 64 --channels 3 --out data/celeba
    ray job submit --working-dir . -- python -m jobs.make_shards --from-folder /shared/celeba --tasks 32 \
        --out s3://bucket/celeba                    # decoded and written by 32 Ray tasks over the cluster
    python -m jobs.make_shards --index 's3://photos/train-{000000..000127}.tar' --resolution 64 --channels 3 \
        --out s3://mine/photos-index                # shards other tools wrote: indexed where they are, not copied
"""
from __future__ import annotations

import sys

from gan.config import ConfigError, ShardConfig, parse
from gan.shards.manifest import ManifestError
from gan.shards.mnist import DatasetUnavailable
from gan.shards.sources import load_dataset, load_folder, stratified_subset
from gan.shards.storage import StorageError
from gan.shards.writer import DEFAULT_SHARD_SAMPLES, SKIPPED_FILES, copy_shards, write_shards

SHOWN_SKIPS = 3


def report_skipped(out: str, folder: str, unreadable: list[str]) -> None:
    """The count of files PIL could not decode, the first few with their reasons, and where the full list went."""
    if not unreadable:
        return
    from gan.shards import storage

    listing = storage.join(out, SKIPPED_FILES)
    storage.write_bytes(listing, ("\n".join(unreadable) + "\n").encode())
    print(f"make_shards: skipped {len(unreadable)} unreadable image files in {folder} (all listed in {listing}):")
    for line in unreadable[:SHOWN_SKIPS]:
        print(f"  {line}")


def index(config: ShardConfig, out: str) -> int:
    """--index: shards.json for shards other tools wrote; they are read once and left as they are."""
    from gan.shards.index import build_index, index_warnings, summary

    if config.tasks:
        from gan.run.ray_session import start_or_join

        start_or_join()
    manifest = build_index(config.index, out, config.resolution, config.channels, config.labels, config.holdout,
                           config.holdout_fraction, config.seed, config.strict, config.tasks)
    for warning in index_warnings(manifest, config.seed):
        print(f"make_shards: warning: {warning}", file=sys.stderr)
    print(f"make_shards: {summary(manifest, config.index, out)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse(ShardConfig, argv)
        out = config.destination()
        if config.upload_from:
            manifest = copy_shards(config.upload_from, out)
        elif config.index:
            return index(config, out)
        elif config.tasks:
            from gan.run.ray_session import start_or_join
            from gan.shards import storage
            from gan.shards.parallel import build_from_folder

            start_or_join()
            manifest, unreadable, nodes = build_from_folder(
                config.from_folder, out, config.resolution, config.channels, config.samples_per_shard,
                config.holdout_fraction, config.seed, config.image_format, config.max_images, config.tasks,
                endpoint=storage.endpoint_url())
            print(f"make_shards: Ray tasks on {nodes} node(s) wrote the shards")
            report_skipped(out, config.from_folder, unreadable)
        else:
            data = (load_folder(config.from_folder, config.resolution, config.channels) if config.from_folder
                    else load_dataset(config.dataset, config.resolution, config.channels, config.cache_dir))
            data = stratified_subset(data, config.max_images, config.seed)
            manifest = write_shards(data, out, config.samples_per_shard, config.holdout_fraction, config.seed,
                                    config.image_format)
            report_skipped(out, config.from_folder, data.unreadable)
    except (ConfigError, ManifestError, StorageError, DatasetUnavailable, FileNotFoundError, ValueError) as error:
        print(f"make_shards: {error}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{split}: {len(shards)} shards / {manifest.sample_count(split)} images"
                       for split, shards in manifest.splits.items())
    largest = manifest.shards("train")[0].samples
    if not (config.upload_from or config.samples_per_shard) and largest < DEFAULT_SHARD_SAMPLES:
        print(f"make_shards: a small set: {len(manifest.shards('train'))} train shards of up to {largest} images, "
              f"so that every rank and loader process gets some (--samples-per-shard sets the size)")
    print(f"make_shards: wrote {out} ({counts}; {manifest.resolution}px x {manifest.channels}ch, "
          f"{manifest.image_format}; dataset hash {manifest.dataset_hash})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
