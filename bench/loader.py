"""Loader throughput, local disk vs S3 (SeaweedFS on 127.0.0.1), measured side by side in one run.

Decoded samples/s through the same WebDataset pipeline the training workers use (read tar, shuffle, PNG decode),
one process, over several passes of the digits training shards. Prints a table and, last, one JSON line.

    .venv/bin/python bench/loader.py [--passes 5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import tempfile
import time
from pathlib import Path

from gan import storage
from gan.data import rank_samples
from gan.local_services import start_seaweedfs
from gan.manifest import read_manifest
from gan.shard_writer import copy_shards, write_shards
from gan.sources import load_digits


def samples_per_second(root: str, passes: int) -> float:
    manifest = read_manifest(root)
    shards = tuple(manifest.shards("train"))
    start, count = time.perf_counter(), 0
    for pass_number in range(passes):
        for _ in rank_samples(root, shards, manifest.resolution, manifest.channels, shuffle_buffer=1000,
                              seed=pass_number):
            count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        local = str(Path(tmp) / "digits")
        write_shards(load_digits(32, 1), local, samples_per_shard=100, holdout_fraction=0.1, seed=0)
        server = start_seaweedfs(Path(tmp) / "seaweedfs", "bench", secrets.token_urlsafe(16), buckets=("bench",))
        try:
            os.environ.update(server.env)
            storage.configure("")
            remote = "s3://bench/digits"
            copy_shards(local, remote)
            samples_per_second(local, 1)  # warm the page cache and imports for both
            local_rate = samples_per_second(local, args.passes)
            s3_rate = samples_per_second(remote, args.passes)
        finally:
            server.stop()
    result = {"local_samples_per_s": round(local_rate), "s3_samples_per_s": round(s3_rate),
              "s3_over_local": round(s3_rate / local_rate, 3), "passes": args.passes,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus"}
    print(f"{'source':<8}{'decoded samples/s':>20}")
    print(f"{'local':<8}{local_rate:>20.0f}")
    print(f"{'s3':<8}{s3_rate:>20.0f}")
    print(f"s3/local = {s3_rate / local_rate:.2f}")
    Path(__file__).with_name("results").mkdir(exist_ok=True)
    (Path(__file__).with_name("results") / "loader.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
