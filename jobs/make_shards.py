"""Entry point: a dataset (the bundled digits, or --from-folder DIR) -> WebDataset shards + shards.json.

    python -m jobs.make_shards --out data/digits
    python -m jobs.make_shards --from-folder ~/celeba --resolution 64 --channels 3 --out data/celeba
"""
from __future__ import annotations

import sys

from gan.config import ConfigError, ShardConfig, parse
from gan.manifest import ManifestError
from gan.shard_writer import copy_shards, write_shards
from gan.storage import StorageError
from gan.sources import load_digits, load_folder


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse(ShardConfig, argv)
        if config.upload_from:
            manifest = copy_shards(config.upload_from, config.out)
        else:
            data = (load_folder(config.from_folder, config.resolution, config.channels) if config.from_folder
                    else load_digits(config.resolution, config.channels))
            if data.unreadable:
                print(f"make_shards: skipped {data.unreadable} unreadable image files in {config.from_folder}")
            manifest = write_shards(data, config.out, config.samples_per_shard, config.holdout_fraction, config.seed,
                                    config.image_format)
    except (ConfigError, ManifestError, StorageError, FileNotFoundError, ValueError) as error:
        print(f"make_shards: {error}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{split}: {len(shards)} shards / {manifest.sample_count(split)} images"
                       for split, shards in manifest.splits.items())
    print(f"make_shards: wrote {config.out} ({counts}; {manifest.resolution}px x {manifest.channels}ch, "
          f"{manifest.image_format}; dataset hash {manifest.dataset_hash})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
