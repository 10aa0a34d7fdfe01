"""img/s for 1, 2 and 3 DDP ranks, one rank per Ray node, on one machine: a head with no CPUs and three one-CPU
worker nodes (`ray start --address`), each run submitted with `ray job submit`, the same per-rank batch throughout.

It measures what this code does across raylets: placement, gloo all-reduce over loopback, each rank's own data
stream. The machine's cores bound it, since all nodes share them: with 2 cores, 3 ranks are oversubscribed. Prints a
table and, last, one JSON line (also in bench/results/multinode_scaling.json).

    .venv/bin/python bench/multinode_scaling.py [--ranks 1,2,3] [--steps 60]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from mlflow import MlflowClient

from gan.shards.sources import load_digits
from gan.shards.writer import write_shards

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repository: its test servers are not installed
from tests.services import start_ray_head, start_ray_node  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="1,2,3")
    parser.add_argument("--steps", type=int, default=60, help="steps per epoch (2 epochs; the second is timed)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    counts = [int(r) for r in args.ranks.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_shards(load_digits(32, 1), str(work / "digits"), 100, 0.1, 0)
        base = Path(f"/tmp/ray-scale-{uuid.uuid4().hex[:6]}")
        head = start_ray_head(base / "head", num_cpus=0)
        started = [head]
        try:
            for index in range(max(counts)):
                started.append(start_ray_node(head, base / f"n{index}", 1, {f"node_{index}": 1}))
            tracking = f"sqlite:///{work / 'mlruns.db'}"
            env = {**{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS"))},
                   **head.env}
            for ranks in counts:
                name = f"scale-{ranks}"
                command = [str(Path(sys.executable).with_name("ray")), "job", "submit", "--address", head.url,
                           "--working-dir", str(REPO), "--runtime-env-json",
                           json.dumps({"env_vars": {"MLFLOW_TRACKING_URI": tracking}}), "--", "python", "-m",
                           "jobs.train", "--shards", str(work / "digits"), "--storage-path", str(work / "ray"),
                           "--artifact-root", str(work / "art"), "--run-name", name, "--num-workers", str(ranks),
                           "--epochs", "2", "--steps-per-epoch", str(args.steps), "--batch-size",
                           str(args.batch_size), "--quality-every", "0", "--no-register"]
                result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=1200)
                if result.returncode:
                    raise SystemExit(result.stdout[-3000:] + result.stderr[-3000:])
                client = MlflowClient(tracking)
                (run,) = client.search_runs([client.get_experiment_by_name("dcgan").experiment_id],
                                            f"tags.`ray.run_name` = '{name}'")
                loop = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "perf/loop_img_per_s"),
                                                key=lambda m: m.step)]
                rows.append({"ranks": ranks, "nodes": int(run.data.tags["cluster.node_count"]),
                             "img_per_s": loop[-1], "per_rank": loop[-1] / ranks})
        finally:
            for server in reversed(started):
                server.stop()
    print(f"DCGAN 32x32x1 (width 32), batch {args.batch_size} per rank, {args.steps} steps per epoch, "
          f"{os.cpu_count()} CPU cores shared by all nodes")
    print(f"{'ranks':>5} {'nodes':>5} {'img/s':>8} {'per rank':>9} {'vs 1 rank':>9}")
    for row in rows:
        row["speedup"] = row["img_per_s"] / rows[0]["img_per_s"]
        print(f"{row['ranks']:>5} {row['nodes']:>5} {row['img_per_s']:>8.0f} {row['per_rank']:>9.0f} "
              f"{row['speedup']:>9.2f}")
    result = {"cpus": os.cpu_count(), "batch_per_rank": args.batch_size, "rows": rows}
    Path(REPO / "bench/results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench/results/multinode_scaling.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
