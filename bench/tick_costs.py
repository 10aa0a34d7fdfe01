"""Where one report cycle's time goes: the real training job in-process on the 8x8 digits, every report kept, its
perf/* columns printed per tick (loop rate, whole-cycle rate, share in train_step, the previous report's seconds).
The process to profile while it runs is the Ray Train worker (docs/performance.md has the py-spy command).

    .venv/bin/python bench/tick_costs.py --resolution 32 --epochs 8                 # tracked, 1 worker x 2 threads
    .venv/bin/python bench/tick_costs.py --resolution 64 --steps-per-epoch 6 --workers 2 --no-tracking
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gan.config import TrainConfig, parse  # noqa: E402
from gan.run.launch import prepare, run  # noqa: E402
from gan.shards.sources import load_digits  # noqa: E402
from gan.shards.writer import write_shards  # noqa: E402

COLUMNS = ["perf/loop_img_per_s", "perf/epoch_img_per_s", "perf/step_fraction", "perf/report_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=32, choices=(32, 64))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="DDP workers, global batch 64, 2 threads shared")
    parser.add_argument("--no-tracking", action="store_true")
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="tick-costs-") as tmp:
        work = Path(tmp)
        channels = 3 if args.resolution == 64 else 1
        write_shards(load_digits(args.resolution, channels), str(work / "digits"), 100, 0.1, 0)
        config = parse(TrainConfig, [
            "--shards", str(work / "digits"), "--storage-path", str(work / "ray"), "--run-name", "ticks",
            "--tracking-uri", f"sqlite:///{work / 'mlruns.db'}", "--artifact-root", str(work / "mlartifacts"),
            "--experiment", "ticks", "--quality-every", "0", "--num-workers", str(args.workers),
            "--batch-size", str(64 // args.workers), "--cpus-per-worker", str(2 // args.workers),
            "--epochs", str(args.epochs), "--keep-checkpoints", str(args.epochs), "--resolution",
            str(args.resolution), "--steps-per-epoch", str(args.steps_per_epoch),
            *(["--no-tracking"] if args.no_tracking else [])]).resolved()
        frame = run(config, prepare(config)).metrics_dataframe
        print(frame[COLUMNS].round(3).to_string())
    ray.shutdown()


if __name__ == "__main__":
    main()
