"""Folder -> shards: one process vs Ray tasks, side by side in one run, on the same folder and destination.

The folder is N JPEG photos of 160x120 (the digits, upscaled and tinted, so PIL pays a real decode and resize);
the shards are 32x32x3 raw. Each build's dataset_hash is printed: all must be equal. Prints a table and, last, one
JSON line (also written to bench/results/shard_build.json).

    .venv/bin/python bench/shard_build.py [--images 6000] [--tasks 1,2,4]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
from PIL import Image

from gan.shards.parallel import build_from_folder
from gan.shards.sources import load_digits, load_folder
from gan.shards.writer import write_shards


def make_folder(root: Path, count: int) -> None:
    digits = load_digits(120, 3)
    for index in range(count):
        tint = np.array([1.0, 0.6 + (index % 7) / 20, 1.0 - (index % 5) / 10])
        image = Image.fromarray((digits.images[index % len(digits.images)] * tint).astype(np.uint8))
        folder = root / f"class{digits.labels[index % len(digits.images)]}"
        folder.mkdir(parents=True, exist_ok=True)
        image.resize((160, 120)).save(folder / f"{index:06d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--tasks", default="1,2,4")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_folder(root / "photos", args.images)
        start = time.perf_counter()
        single = write_shards(load_folder(str(root / "photos"), 32, 3), str(root / "one"), 500, 0.1, 0)
        rows.append({"build": "1 process", "seconds": time.perf_counter() - start, "hash": single.dataset_hash})
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        ray.get([ray.remote(lambda: 0).remote() for _ in range(os.cpu_count())])  # workers up before timing
        for tasks in (int(t) for t in args.tasks.split(",")):
            start = time.perf_counter()
            manifest, _, _ = build_from_folder(str(root / "photos"), str(root / f"tasks{tasks}"), 32, 3, 500, 0.1, 0,
                                            "raw", 0, tasks)
            rows.append({"build": f"{tasks} Ray task(s)", "seconds": time.perf_counter() - start,
                         "hash": manifest.dataset_hash})
        ray.shutdown()
    print(f"{args.images} JPEGs 160x120 -> 32x32x3 raw shards on {os.cpu_count()} CPUs ({platform.processor()})")
    print(f"{'build':<16} {'seconds':>8} {'img/s':>8}  dataset_hash")
    for row in rows:
        row["img_per_s"] = args.images / row["seconds"]
        print(f"{row['build']:<16} {row['seconds']:>8.1f} {row['img_per_s']:>8.0f}  {row['hash']}")
    assert len({row["hash"] for row in rows}) == 1, "the builds differ"
    result = {"images": args.images, "cpus": os.cpu_count(), "rows": rows}
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/shard_build.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
