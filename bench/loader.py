"""Loader throughput: raw vs PNG storage, local disk vs S3 (SeaweedFS on 127.0.0.1), side by side in one run.

Decoded samples/s through the same WebDataset pipeline the training workers use (read tar, shuffle, decode), one
process, over several passes of the digits training shards at 32x32x1 and 64x64x3; then whole batches of 128 for one
rank from raw local shards (the digits ten times over), decoded in the training process vs in loader processes
(`--loader-workers-per-rank`). Prints tables and, last, one JSON line.

    .venv/bin/python bench/loader.py [--passes 5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gan.shards import storage
from gan.shards.batches import plan_epoch, rank_batches, rank_samples
from gan.shards.loader_processes import process_batches
from gan.shards.manifest import read_manifest
from gan.shards.reader import DataHealth, ReadPolicy
from gan.shards.sources import ImageSet, load_digits
from gan.shards.writer import copy_shards, write_shards

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: its test servers are not installed
from tests.services import start_seaweedfs  # noqa: E402


def samples_per_second(root: str, passes: int) -> float:
    manifest = read_manifest(root)
    shards = tuple(manifest.shards("train"))
    start, count = time.perf_counter(), 0
    for pass_number in range(passes):
        for _ in rank_samples(root, shards, manifest.image_spec, shuffle_buffer=1000,
                              seed=pass_number):
            count += 1
    return count / (time.perf_counter() - start)


def batched_samples_per_second(root: str, epochs: int, processes: int, batch_size: int = 128) -> float:
    """Samples/s arriving as whole uint8 batches, as a training worker takes them (0 processes = in this one)."""
    manifest = read_manifest(root)
    start, count = time.perf_counter(), 0
    for epoch in range(epochs):
        plan = plan_epoch(manifest.shards("train"), 1, batch_size, epoch, seed=0)
        if processes:
            batches = process_batches(root, plan, 0, manifest.image_spec, 1000, epoch, DataHealth(), ReadPolicy(),
                                      processes)
        else:
            batches = rank_batches(root, plan, 0, manifest.image_spec, 1000, epoch)
        count += sum(len(images) for images, _ in batches)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = start_seaweedfs(Path(tmp) / "seaweedfs", "bench", secrets.token_urlsafe(16), buckets=("bench",))
        try:
            os.environ.update(server.env)
            storage.configure("")
            for resolution, channels in ((32, 1), (64, 3)):
                data = load_digits(resolution, channels)
                for image_format in ("png", "raw"):
                    case = f"{resolution}x{resolution}x{channels}_{image_format}"
                    local, remote = str(Path(tmp) / case), f"s3://bench/{case}"
                    write_shards(data, local, samples_per_shard=100, holdout_fraction=0.1, seed=0,
                                 image_format=image_format)
                    copy_shards(local, remote)
                    samples_per_second(local, 1)  # warm the page cache and imports
                    rates[f"{case}_local"] = samples_per_second(local, args.passes)
                    rates[f"{case}_s3"] = samples_per_second(remote, args.passes)
            # Epochs long enough (17k samples, 1,000 per shard) that starting the loader processes, once per
            # epoch, is not what is measured.
            digits = load_digits(32, 1)
            tenfold = ImageSet(np.concatenate([digits.images] * 10), np.concatenate([digits.labels] * 10),
                               digits.class_names, "digits x 10")
            raw = str(Path(tmp) / "32x32x1_raw_x10")
            write_shards(tenfold, raw, samples_per_shard=1000, holdout_fraction=0.05, seed=0)
            for processes in (0, 1, 2):  # 1: the same decoding, moved out of the training process
                rates[f"batches_32x32x1_raw_{processes}_loader_processes"] = batched_samples_per_second(
                    raw, 2, processes)
        finally:
            server.stop()
    result = {f"{case}_samples_per_s": round(rate) for case, rate in rates.items()}
    result.update({"passes": args.passes, "machine": f"{platform.processor() or platform.machine()}, "
                                                     f"{os.cpu_count()} cpus"})
    print(f"{'decoded samples/s':<20}{'local':>10}{'s3':>10}{'s3/local':>10}{'raw/png':>10}")
    for case in ("32x32x1_png", "32x32x1_raw", "64x64x3_png", "64x64x3_raw"):
        local, s3 = rates[f"{case}_local"], rates[f"{case}_s3"]
        png_local = rates[case.replace("_raw", "_png") + "_local"]
        print(f"{case:<20}{local:>10.0f}{s3:>10.0f}{s3 / local:>10.2f}{local / png_local:>10.2f}")
    print(f"\n{'batched, 32x32x1 raw, 10x digits':<34}{'samples/s':>10}{'vs in-process':>15}")
    in_process = rates["batches_32x32x1_raw_0_loader_processes"]
    for processes in (0, 1, 2):
        rate = rates[f"batches_32x32x1_raw_{processes}_loader_processes"]
        label = f"{processes} loader processes" if processes else "in the training process"
        print(f"{label:<34}{rate:>10.0f}{rate / in_process:>15.2f}")
    Path(__file__).with_name("results").mkdir(exist_ok=True)
    (Path(__file__).with_name("results") / "loader.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
