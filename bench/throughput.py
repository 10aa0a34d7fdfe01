"""Throughput of the whole system against a bare PyTorch loop, measured side by side in one run.

1. reference: a plain single-process DCGAN step (the same train_step arithmetic), synthetic tensors, every thread
   of the machine, no Ray / loader / tracking, global batch = ours;
2. ours: the real training job in-process (Ray Train, N DDP workers, shards streamed through WebDataset, MLflow on),
   over its epochs after the first (warm-up; 3 with --quick, 5 without): the steady training loop (steps with
   their data loading and logging: `perf/loop_img_per_s`) and the whole epoch (plus its sample grid, checkpoint and
   report);
3. ours / reference at 32x32x1 and 64x64x3, for the steady loop and the whole epoch; by default with 1 worker
   holding every thread, as the reference does (on one 2-core machine DDP cannot gain), plus 2 workers x 1 thread
   at 32x32x1 for the scaling note;
4. the data path alone: decoded samples/s in one process (what one worker's loader can give), local and S3,
   against what one training worker consumes;
5. tracking overhead: ours with MLflow on vs --no-tracking (wall clock), and the CPU time the MLflow logger thread
   used per epoch (`perf/tracking_cpu_share`), which this machine's wandering speed cannot blur.

    .venv/bin/python bench/throughput.py --quick      # ~5 minutes on 2 cores; last line is one JSON object
"""
from __future__ import annotations

import argparse
import dataclasses
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
from loader import samples_per_second  # noqa: E402  (bench/loader.py beside this file; it puts the repo on the path)

from gan.config import TrainConfig, parse  # noqa: E402
from gan.run.launch import prepare, run  # noqa: E402
from gan.shards import storage  # noqa: E402
from gan.shards.sources import load_digits  # noqa: E402
from gan.shards.writer import copy_shards, write_shards  # noqa: E402
from gan.training.augment import parse_policy  # noqa: E402
from gan.training.models import ModelShape  # noqa: E402
from gan.training.state import TrainState  # noqa: E402
from gan.training.step import train_step  # noqa: E402
from tests.services import start_seaweedfs  # noqa: E402

GLOBAL_BATCH = 64  # images per step on both sides, split over the workers (the job's default 2 x 32)


def reference_img_per_s(resolution: int, channels: int, batch: int, steps: int, threads: int) -> float:
    """The bare loop, with the job's default memory layout and precision so both sides do the same arithmetic."""
    defaults = TrainConfig()
    torch.set_num_threads(threads)
    state = TrainState.create(ModelShape(resolution, channels, defaults.latent_dim, defaults.g_features,
                                         defaults.d_features), 2e-4, 0.5, seed=0,
                              ema_half_life_kimg=defaults.ema_half_life_kimg, ema_rampup=defaults.ema_rampup,
                              augment=parse_policy(defaults.diffaugment, channels), images_per_step=batch)
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


def ours_img_per_s(shards: str, work: Path, name: str, *flags: str) -> tuple[float, float, float]:
    """(steady loop img/s, whole epoch img/s, tracking's CPU share of one core) of the real job, averaged over its
    epochs after the first."""
    config = parse(TrainConfig, ["--shards", shards, "--storage-path", str(work / "ray"), "--run-name", name,
                                 "--tracking-uri", f"sqlite:///{work / 'mlruns.db'}", "--artifact-root",
                                 str(work / "mlartifacts"), "--experiment", "bench", "--quality-every", "0",
                                 "--epochs", "3", *flags]).resolved()
    # Ray Train's metrics_dataframe holds only the kept checkpoints' rows: keep them all.
    config = dataclasses.replace(config, keep_checkpoints=config.epochs)
    frame = run(config, prepare(config)).metrics_dataframe
    steady = frame.tail(max(1, len(frame) - 1))
    return tuple(float(steady[f"perf/{name}"].mean())
                 for name in ("loop_img_per_s", "epoch_img_per_s", "tracking_cpu_share"))


def bracketed(runs: list[list[str]], shards: str, work: Path, key: str, resolution: int, channels: int,
              reference_steps: int, threads: int) -> tuple[list[float], list[dict[str, float]]]:
    """Reference, run, reference, run, ..., reference: each of ours against the mean of the two references around
    it, because this machine's speed wanders by +-10% within a minute and a ratio of two measurements taken minutes
    apart would mostly measure that."""
    references = [reference_img_per_s(resolution, channels, GLOBAL_BATCH, reference_steps, threads)]
    measured = []
    for i, flags in enumerate(runs):
        steady, epoch, tracking_cpu_share = ours_img_per_s(shards, work, f"ours-{key}-{i}", *flags)
        references.append(reference_img_per_s(resolution, channels, GLOBAL_BATCH, reference_steps, threads))
        around = (references[-2] + references[-1]) / 2
        measured.append({"steady": steady, "epoch": epoch, "steady_ratio": steady / around,
                         "epoch_ratio": epoch / around, "tracking_cpu_share": tracking_cpu_share})
    return references, measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer epochs and steps (about 5 minutes on 2 cores)")
    parser.add_argument("--workers", type=int, default=1, help="DDP workers; each gets cpus/workers threads")
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    started = time.perf_counter()
    import ray

    ray.init(num_cpus=threads, include_dashboard=False, log_to_driver=False)
    rows, result = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        digits32, digits64 = str(work / "digits32"), str(work / "digits64")
        write_shards(load_digits(32, 1), digits32, 100, 0.1, 0)
        write_shards(load_digits(64, 3), digits64, 100, 0.1, 0)
        def layout(workers: int) -> list[str]:
            return ["--num-workers", str(workers), "--batch-size", str(GLOBAL_BATCH // workers),
                    "--cpus-per-worker", str(max(1, threads // workers))]

        # The first epoch is warm-up; the rest are measured (a 32x32x1 epoch takes ~2 s, so one alone is noisy).
        common = layout(args.workers) + ["--epochs", "4" if args.quick else "6"]
        # A first fit absorbs Ray's start-up activity (GCS, dashboard, first worker imports) that would skew run 1.
        ours_img_per_s(digits32, work, "warm-up", *common, "--no-tracking", "--epochs", "1", "--steps-per-epoch", "5")

        # Tracked (T) and untracked (U) runs alternate at 32x32x1 (T U T U T), so the tracking overhead is judged on
        # runs taken minutes apart at most, each against its own reference neighbours.
        cases = ((32, 1, digits32, 0, ["T", "U", "T", "U", "T"] if args.quick else ["T", "U"] * 3 + ["T"]),
                 (64, 3, digits64, 6 if args.quick else 20, ["T", "T", "T"]))  # three, for a median
        for resolution, channels, shards, steps_per_epoch, kinds in cases:
            key = f"{resolution}x{resolution}x{channels}"
            flags = [*common, "--resolution", str(resolution), "--steps-per-epoch", str(steps_per_epoch)]
            runs = [[*flags, "--no-tracking"] if kind == "U" else flags for kind in kinds]
            references, measured = bracketed(runs, shards, work, key, resolution, channels,
                                             (8 if resolution == 64 else 20) * (1 if args.quick else 3), threads)
            tracked = [m for m, kind in zip(measured, kinds) if kind == "T"]
            steady_ratio = statistics.median(m["steady_ratio"] for m in tracked)
            epoch_ratio = statistics.median(m["epoch_ratio"] for m in tracked)
            ours = (statistics.mean(m["steady"] for m in tracked), statistics.mean(m["epoch"] for m in tracked))
            rows.append((f"DCGAN {key}", statistics.mean(references), *ours, steady_ratio, epoch_ratio))
            result.update({f"reference_img_per_s_{key}": statistics.mean(references),
                           f"ours_img_per_s_{key}": ours[0], f"ours_epoch_img_per_s_{key}": ours[1],
                           f"ratio_{key}": steady_ratio, f"epoch_ratio_{key}": epoch_ratio,
                           f"ratios_{key}": [round(m["steady_ratio"], 3) for m in tracked],
                           f"runs_{key}": [{"tracking": kind == "T", **{k: round(v, 4) for k, v in m.items()}}
                                           for m, kind in zip(measured, kinds)],
                           f"reference_runs_{key}": [round(value, 1) for value in references]})
            untracked = [m for m, kind in zip(measured, kinds) if kind == "U"]
            if untracked:  # on whole epochs, which include the sample grid that tracking encodes and uploads
                untracked_ratio = statistics.median(m["epoch_ratio"] for m in untracked)
                result["ours_untracked_epoch_img_per_s_32x32x1"] = statistics.mean(m["epoch"] for m in untracked)
                result["tracking_overhead"] = 1 - epoch_ratio / untracked_ratio  # below 0: run-to-run noise
                # How far run-to-run noise alone moves that difference (one standard error): on this machine a
                # single run's ratio wanders by ~5%, so a few runs cannot resolve a 2% effect.
                spread = [statistics.stdev(m["epoch_ratio"] for m in runs) ** 2 / len(runs)
                          for runs in (tracked, untracked) if len(runs) > 1]
                result["tracking_overhead_noise"] = (sum(spread) ** 0.5 / untracked_ratio) if spread else None
                # The logger thread's CPU over the epoch, as a share of the machine's cores: what it takes away.
                result["tracking_cpu_share_of_machine"] = statistics.median(
                    m["tracking_cpu_share"] for m in tracked) / threads

        other = 2 if args.workers == 1 else 1
        scaled = ours_img_per_s(digits32, work, f"ours-{other}-workers", *layout(other)) if not args.quick else None
        if scaled:
            result[f"ours_img_per_s_32x32x1_{other}_workers"] = scaled[0]
            result[f"ours_epoch_img_per_s_32x32x1_{other}_workers"] = scaled[1]

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
        consumed_per_worker = result["ours_img_per_s_32x32x1"] / args.workers
        result.update({"loader_local_samples_per_s": round(local), "loader_s3_samples_per_s": round(s3),
                       "consumed_per_worker_img_per_s": round(consumed_per_worker, 1),
                       "data_path_over_consumption": round(min(local, s3) / consumed_per_worker, 2)})
    ray.shutdown()

    result.update({"workers": args.workers, "batch_per_worker": GLOBAL_BATCH // args.workers, "threads": threads,
                   "quick": args.quick, "torch": torch.__version__, "ray": ray.__version__, "python": platform.python_version(),
                   "machine": f"{platform.machine()}, {threads} cpus", "seconds": round(time.perf_counter() - started)})
    print(f"\n{args.workers} worker(s); steady = the training loop, epoch = plus grid, checkpoint and report")
    print("ratio = median over the runs of ours / the mean of the reference runs just before and after it")
    print(f"{'':<16}{'reference img/s':>17}{'ours steady':>13}{'ratio':>8}{'ours epoch':>12}{'ratio':>8}")
    for label, reference, steady, epoch, steady_ratio, epoch_ratio in rows:
        print(f"{label:<16}{reference:>17.1f}{steady:>13.1f}{steady_ratio:>8.3f}{epoch:>12.1f}{epoch_ratio:>8.3f}")
    print(f"32x32x1 steady ratio per run: {result['ratios_32x32x1']}")
    if scaled:
        print(f"{other} worker(s) at 32x32x1: steady {scaled[0]:.1f}, epoch {scaled[1]:.1f} img/s")
    print(f"tracking off {result['ours_untracked_epoch_img_per_s_32x32x1']:.1f} img/s, on "
          f"{result['ours_epoch_img_per_s_32x32x1']:.1f} img/s (whole epochs): overhead "
          f"{result['tracking_overhead']:.1%} (run-to-run noise: +-{result['tracking_overhead_noise'] or 0:.1%}); "
          f"the MLflow logger thread's CPU time: "
          f"{result['tracking_cpu_share_of_machine']:.2%} of the machine")
    print(f"loader (1 process): local {local:.0f}, S3 {s3:.0f} samples/s; one worker consumes "
          f"{consumed_per_worker:.0f} img/s -> {result['data_path_over_consumption']:.1f}x")
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    result = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}
    name = f"throughput{'-quick' if args.quick else ''}{f'-{args.workers}-workers' if args.workers > 1 else ''}.json"
    (out / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
