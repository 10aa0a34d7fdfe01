"""Throughput of the whole system against a bare PyTorch loop, measured side by side in one run.

1. reference: a plain single-process DCGAN step (the same train_step arithmetic), synthetic tensors, every thread
   of the machine, no Ray / loader / tracking, global batch = ours;
2. ours: the real training job in-process (Ray Train, N DDP workers, shards streamed through WebDataset, MLflow on),
   img/s over the last two epochs (warm-up epoch excluded; each epoch's time includes its grid, checkpoint, report);
3. ours / reference at 32x32x1 and 64x64x3;
4. the data path alone: decoded samples/s in one process (what one worker's loader can give), local and S3,
   against what one training worker consumes;
5. tracking overhead: ours with MLflow on vs --no-tracking.

    .venv/bin/python bench/throughput.py --quick      # < 5 minutes on 2 cores; last line is one JSON object
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loader import samples_per_second  # noqa: E402  (bench/loader.py beside this file)

from gan import storage  # noqa: E402
from gan.config import TrainConfig, parse  # noqa: E402
from gan.local_services import start_seaweedfs  # noqa: E402
from gan.models import ModelShape  # noqa: E402
from gan.shard_writer import copy_shards, write_shards  # noqa: E402
from gan.sources import load_digits  # noqa: E402
from gan.state import TrainState  # noqa: E402
from gan.step import train_step  # noqa: E402
from jobs.train import check_against_shards, run  # noqa: E402


def reference_img_per_s(resolution: int, channels: int, batch: int, steps: int, threads: int) -> float:
    """The bare loop, with the job's default memory layout and precision so both sides do the same arithmetic."""
    defaults = TrainConfig()
    torch.set_num_threads(threads)
    state = TrainState.create(ModelShape(resolution, channels, 100, 64, 64), 2e-4, 0.5, seed=0)
    layout = torch.channels_last if defaults.channels_last else torch.contiguous_format
    state.generator.to(memory_format=layout)
    state.discriminator.to(memory_format=layout)
    images = (torch.rand(batch, channels, resolution, resolution) * 2 - 1).contiguous(memory_format=layout)
    for _ in range(3):
        train_step(state, images, bf16=defaults.bf16)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(state, images, bf16=defaults.bf16)
    return steps * batch / (time.perf_counter() - start)


def ours_img_per_s(shards: str, work: Path, name: str, *flags: str) -> float:
    config = parse(TrainConfig, ["--shards", shards, "--storage-path", str(work / "ray"), "--run-name", name,
                                 "--tracking-uri", f"sqlite:///{work / 'mlruns.db'}", "--artifact-root",
                                 str(work / "mlartifacts"), "--experiment", "bench", "--quality-every", "0",
                                 "--epochs", "3", *flags]).resolved()
    result = run(config, check_against_shards(config))
    frame = result.metrics_dataframe
    return float(frame["perf/epoch_img_per_s"].tail(2).mean() if len(frame) > 1 else frame["perf/epoch_img_per_s"][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps (under 5 minutes on 2 cores)")
    parser.add_argument("--workers", type=int, default=2, help="DDP workers; each gets cpus/workers threads")
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    batch = 64 // args.workers  # per worker: the global batch stays 64 (the default 2 x 32) for any worker count
    started = time.perf_counter()
    import ray

    ray.init(num_cpus=threads, include_dashboard=False, log_to_driver=False)
    rows, result = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        digits32, digits64 = str(work / "digits32"), str(work / "digits64")
        write_shards(load_digits(32, 1), digits32, 100, 0.1, 0)
        write_shards(load_digits(64, 3), digits64, 100, 0.1, 0)
        common = ["--num-workers", str(args.workers), "--batch-size", str(batch),
                  "--cpus-per-worker", str(max(1, threads // args.workers))]
        # A first fit absorbs Ray's start-up activity (GCS, dashboard, first worker imports) that would skew run 1.
        ours_img_per_s(digits32, work, "warm-up", *common, "--no-tracking", "--epochs", "1", "--steps-per-epoch", "5")

        for resolution, channels, shards, steps_per_epoch in ((32, 1, digits32, 0),
                                                             (64, 3, digits64, 6 if args.quick else 20)):
            key = f"{resolution}x{resolution}x{channels}"
            reference_steps = (8 if resolution == 64 else 20) * (1 if args.quick else 3)
            # Reference before and after ours, averaged: this machine's speed drifts by several percent over
            # minutes, and a ratio of two measurements taken at different times would carry that drift.
            before = reference_img_per_s(resolution, channels, batch * args.workers, reference_steps, threads)
            ours = ours_img_per_s(shards, work, f"ours-{key}", *common, "--resolution", str(resolution),
                                  "--steps-per-epoch", str(steps_per_epoch))
            after = reference_img_per_s(resolution, channels, batch * args.workers, reference_steps, threads)
            reference = (before + after) / 2
            rows.append((f"DCGAN {key}", reference, ours))
            result[f"reference_img_per_s_{key}"] = reference
            result[f"ours_img_per_s_{key}"] = round(ours, 1)
            result[f"ratio_{key}"] = round(ours / reference, 3)

        # Tracking on/off in an A-B-B-A order, so a drift of the machine's speed cancels out.
        untracked = statistics.mean(ours_img_per_s(digits32, work, f"ours-untracked-{i}", *common, "--no-tracking")
                                    for i in range(2))
        tracked = statistics.mean([result["ours_img_per_s_32x32x1"],
                                   ours_img_per_s(digits32, work, "ours-tracked-2", *common)])
        reference32 = result["reference_img_per_s_32x32x1"]
        result["ours_img_per_s_32x32x1"], result["ratio_32x32x1"] = round(tracked, 1), round(tracked / reference32, 3)
        rows[0] = (rows[0][0], rows[0][1], tracked)
        result["ours_untracked_img_per_s_32x32x1"] = round(untracked, 1)
        result["tracking_overhead"] = round(1 - tracked / untracked, 4)  # signed: below 0 is run-to-run noise

        torch.set_num_threads(1)  # one worker's loader shares that worker's one CPU
        local = samples_per_second(digits32, passes=2)
        server = start_seaweedfs(work / "seaweedfs", "bench", secrets.token_urlsafe(16), buckets=("bench",))
        try:
            os.environ.update(server.env)
            storage.configure("")
            copy_shards(digits32, "s3://bench/digits32")
            s3 = samples_per_second("s3://bench/digits32", passes=2)
        finally:
            server.stop()
        consumed_per_worker = tracked / args.workers
        result.update({"loader_local_samples_per_s": round(local), "loader_s3_samples_per_s": round(s3),
                       "consumed_per_worker_img_per_s": round(consumed_per_worker, 1),
                       "data_path_over_consumption": round(min(local, s3) / consumed_per_worker, 2)})
    ray.shutdown()

    result.update({"workers": args.workers, "batch_per_worker": batch, "threads": threads, "quick": args.quick,
                   "torch": torch.__version__, "ray": ray.__version__, "python": platform.python_version(),
                   "machine": f"{platform.machine()}, {threads} cpus", "seconds": round(time.perf_counter() - started)})
    print(f"\n{'':<16}{'reference img/s':>17}{'ours img/s':>13}{'ours/ref':>10}")
    for label, reference, ours in rows:
        print(f"{label:<16}{reference:>17.1f}{ours:>13.1f}{ours / reference:>10.3f}")
    print(f"tracking off {untracked:.1f} img/s, on {tracked:.1f} img/s: overhead {result['tracking_overhead']:.1%}")
    print(f"loader (1 process): local {local:.0f}, S3 {s3:.0f} samples/s; one worker consumes "
          f"{consumed_per_worker:.0f} img/s -> {result['data_path_over_consumption']:.1f}x")
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    result = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}
    (out / f"throughput{'-quick' if args.quick else ''}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
