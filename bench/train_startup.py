"""Ray Train's fixed cost per run: seconds from `TorchTrainer.fit()` to its return for a loop that only reports,
at Ray's default controller poll interval (2 s) and at ours (gan/run/worker.py CONTROLLER_POLL_SECONDS), side by
side in one run on one local Ray. Every sweep trial and every PBT generation pays this once. Prints a table and, last,
one JSON line.

    .venv/bin/python bench/train_startup.py [--runs 3] [--workers 2] [--reports 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import ray
import ray.train
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from gan.run.worker import CONTROLLER_POLL_SECONDS

RAY_DEFAULT_POLL_SECONDS = "2.0"


def report_only(config: dict) -> None:
    for index in range(config["reports"]):
        ray.train.report({"index": index})


def fit_seconds(poll_seconds: str, workers: int, reports: int, storage: str) -> float:
    # Read when the trainer starts its controller, so each fit below gets its own interval.
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = poll_seconds
    trainer = TorchTrainer(report_only, train_loop_config={"reports": reports},
                           scaling_config=ScalingConfig(num_workers=workers),
                           run_config=RunConfig(name=f"startup-{time.time_ns()}", storage_path=storage))
    start = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="fits per interval, alternating (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers per fit (default 2)")
    parser.add_argument("--reports", type=int, default=3, help="ray.train.report calls per fit (default 3)")
    args = parser.parse_args()
    ray.init(num_cpus=args.workers, include_dashboard=False, logging_level="ERROR")
    seconds: dict[str, list[float]] = {RAY_DEFAULT_POLL_SECONDS: [], CONTROLLER_POLL_SECONDS: []}
    with tempfile.TemporaryDirectory() as storage:
        for _ in range(args.runs):
            for poll in seconds:
                seconds[poll].append(fit_seconds(poll, args.workers, args.reports, storage))
    print(f"{'poll interval':>14} {'median fit s':>13} {'all':>24}")
    for poll, values in seconds.items():
        print(f"{poll + ' s':>14} {statistics.median(values):13.1f} {' '.join(f'{v:.1f}' for v in values):>24}")
    default, ours = (statistics.median(seconds[p]) for p in (RAY_DEFAULT_POLL_SECONDS, CONTROLLER_POLL_SECONDS))
    result = {"bench": "train_startup", "workers": args.workers, "reports": args.reports,
              "median_fit_seconds": {p: round(statistics.median(v), 2) for p, v in seconds.items()},
              "ratio_default_to_ours": round(default / ours, 2)}
    Path(__file__).with_name("results").mkdir(exist_ok=True)
    (Path(__file__).with_name("results") / "train_startup.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
