"""Loader throughput: npy, raw and PNG storage, local disk vs S3 (SeaweedFS on 127.0.0.1), side by side in one run.

Decoded samples/s through the same WebDataset pipeline the training workers use (read tar, shuffle, decode), one
process, over several passes of the digits training shards at 32x32x1 and 64x64x3; then whole batches of 128 for one
rank from raw local shards (the digits ten times over), decoded in the training process vs in loader processes
(`--loader-workers-per-rank`); then foreign shards (256 px JPEGs written by webdataset.ShardWriter, indexed, fitted
to 64x64x3 at load time) beside our npy shards of the same images, against what one rank's training step consumes
at 64x64x3. Prints tables and, last, one JSON line.

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


FOREIGN_SIDE = 256  # what hub exports and img2dataset typically hold
FOREIGN_CASES = ("npy_64x64x3", "jpeg256_to_64x64x3", "jpeg256_to_64x64x3_no_draft")


def _jpeg_shards(folder: Path, copies: int = 2) -> str:
    """The digits at 256x256x3 as JPEG (quality 90), `copies` times over, through webdataset.ShardWriter."""
    import io

    import webdataset as wds
    from PIL import Image

    digits = load_digits(FOREIGN_SIDE, 3)
    folder.mkdir()
    with wds.ShardWriter(str(folder / "part-%06d.tar"), maxcount=500, verbose=0) as writer:
        for copy in range(copies):
            for index, (image, label) in enumerate(zip(digits.images, digits.labels)):
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="JPEG", quality=90)
                writer.write({"__key__": f"{copy}-{index:05d}", "jpg": buffer.getvalue(), "cls": int(label)})
    return f"{folder}/part-{{000000..{len(list(folder.glob('part-*.tar'))) - 1:06d}}}.tar"


def foreign_rates(tmp: Path) -> dict[str, float]:
    """Batches of 128 from indexed 256 px JPEG shards fitted to 64x64x3 (with and without libjpeg's reduced-size
    decoding) and from npy shards of the same images, in the training process and in 1 and 2 loader processes; and
    one rank's consumption: the default training step at 64x64x3, one thread, its batch of 32."""
    import contextlib
    from unittest import mock

    from PIL.JpegImagePlugin import JpegImageFile

    from gan.shards.index import build_index

    digits = load_digits(64, 3)
    twice = ImageSet(np.concatenate([digits.images] * 2), np.concatenate([digits.labels] * 2), digits.class_names,
                     "digits x 2 at 64x64x3")
    roots = {"npy_64x64x3": str(tmp / "npy64")}
    write_shards(twice, roots["npy_64x64x3"], samples_per_shard=500, holdout_fraction=0.1, seed=0)
    roots["jpeg256_to_64x64x3"] = roots["jpeg256_to_64x64x3_no_draft"] = str(tmp / "jpeg-index")
    build_index(_jpeg_shards(tmp / "jpeg256"), roots["jpeg256_to_64x64x3"], 64, 3)
    rates = {}
    for case in FOREIGN_CASES:
        # Without draft, PIL decodes every JPEG at its full 256 px before scaling (what a plain decoder does).
        with (mock.patch.object(JpegImageFile, "draft", lambda *args: None) if case.endswith("draft")
              else contextlib.nullcontext()):
            for processes in (0, 1, 2):
                if processes and case.endswith("draft"):
                    continue  # the patch does not reach loader processes started afresh
                rates[f"foreign_{case}_{processes}_loader_processes"] = batched_samples_per_second(
                    roots[case], 2, processes)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from throughput import reference_img_per_s  # bench/throughput.py imports this file: imported here, not on top

    import torch

    threads = torch.get_num_threads()
    rates["one_rank_consumes_64x64x3"] = reference_img_per_s(64, 3, 32, 20, threads=1)
    torch.set_num_threads(threads)
    return rates


def print_foreign(rates: dict[str, float]) -> None:
    consumed = rates["one_rank_consumes_64x64x3"]
    print(f"\n{'batched 64x64x3, samples/s':<34}{'in-process':>12}{'1 loader':>10}{'2 loaders':>10}"
          f"{'best / rank':>12}")
    for case in FOREIGN_CASES:
        row = [rates.get(f"foreign_{case}_{n}_loader_processes") for n in (0, 1, 2)]
        cells = "".join(f"{value:>{width}.0f}" if value else f"{'-':>{width}}"
                        for value, width in zip(row, (12, 10, 10)))
        print(f"{case:<34}{cells}{max(v for v in row if v) / consumed:>12.1f}")
    print(f"{'one rank consumes (step, 1 thread)':<34}{consumed:>12.0f}")


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
                for image_format in ("png", "raw", "npy"):
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
            rates.update(foreign_rates(Path(tmp)))
        finally:
            server.stop()
    result = {f"{case}_samples_per_s": round(rate) for case, rate in rates.items()}
    result.update({"passes": args.passes, "machine": f"{platform.processor() or platform.machine()}, "
                                                     f"{os.cpu_count()} cpus"})
    print(f"{'decoded samples/s':<20}{'local':>10}{'s3':>10}{'s3/local':>10}{'vs png':>10}")
    for case in ("32x32x1_png", "32x32x1_raw", "32x32x1_npy", "64x64x3_png", "64x64x3_raw", "64x64x3_npy"):
        local, s3 = rates[f"{case}_local"], rates[f"{case}_s3"]
        png_local = rates[case.rsplit("_", 1)[0] + "_png_local"]
        print(f"{case:<20}{local:>10.0f}{s3:>10.0f}{s3 / local:>10.2f}{local / png_local:>10.2f}")
    print(f"\n{'batched, 32x32x1 raw, 10x digits':<34}{'samples/s':>10}{'vs in-process':>15}")
    in_process = rates["batches_32x32x1_raw_0_loader_processes"]
    for processes in (0, 1, 2):
        rate = rates[f"batches_32x32x1_raw_{processes}_loader_processes"]
        label = f"{processes} loader processes" if processes else "in the training process"
        print(f"{label:<34}{rate:>10.0f}{rate / in_process:>15.2f}")
    print_foreign(rates)
    Path(__file__).with_name("results").mkdir(exist_ok=True)
    (Path(__file__).with_name("results") / "loader.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
