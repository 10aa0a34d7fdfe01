"""A finished sweep's trials as a table: every quality measurement of each trial, and at its best one (the generator
the trial registers) × floor, precision, recall, class match, the EMA and raw generators' fid_domain, and the
trial's training time. Read from the sweep's MLflow store, so it works on any sweep, here or on a cluster.

    .venv/bin/python bench/sweep_table.py --tracking-uri sqlite:///mlruns.db --sweep mnist-width [--out rows.json]
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from mlflow import MlflowClient

AT_BEST = ("quality/precision", "quality/recall", "quality/class_match", "quality_ema/fid_domain",
           "quality_raw/fid_domain")


def sweep_rows(client: MlflowClient, experiment: str, sweep: str) -> list[dict]:
    """One row per trial of the sweep whose run name is `sweep <sweep>`, in the order the trials started."""
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    parents = client.search_runs([experiment_id], "tags.job = 'sweep'")
    parent = next((run for run in parents if run.info.run_name == f"sweep {sweep}"), None)
    if parent is None:
        raise SystemExit(f"no sweep named {sweep!r} in experiment {experiment!r}; there are: "
                         f"{', '.join(run.info.run_name for run in parents) or 'none'}")
    trials = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                                order_by=["attributes.start_time ASC"])
    return [_trial_row(client, trial) for trial in trials]


def _trial_row(client: MlflowClient, trial) -> dict:
    def history(key: str) -> dict[int, float]:
        return {point.step: point.value for point in client.get_metric_history(trial.info.run_id, key)}

    fids, kimgs = history("quality/fid_domain"), history("kimg")
    floor = trial.data.metrics.get("quality/fid_domain_floor", math.nan)
    best_step = min(fids, key=fids.get) if fids else None
    ticks = client.get_metric_history(trial.info.run_id, "tick")
    return {"trial": trial.info.run_name, "status": trial.data.tags.get("status", ""),
            "measurements": [{"kimg": kimgs.get(step, math.nan), "fid_domain": value}
                             for step, value in sorted(fids.items())],
            "best": {"kimg": kimgs.get(best_step, math.nan), "fid_domain": fids.get(best_step, math.nan),
                     "x_floor": fids.get(best_step, math.nan) / floor,
                     **{key: history(key).get(best_step, math.nan) for key in AT_BEST}},
            "floor": floor,
            # From the run's start to its last report: the trial's own time, not the queue before it.
            "minutes": (max(p.timestamp for p in ticks) - trial.info.start_time) / 60_000 if ticks else math.nan}


def markdown(rows: list[dict]) -> str:
    lines = ["| trial | fid_domain at each measurement (kimg) | best: × floor | precision | recall | class match "
             "| EMA / raw | minutes |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        best = row["best"]
        series = " / ".join(f"{m['fid_domain']:.2f} ({m['kimg']:.0f})" for m in row["measurements"])
        lines.append(f"| {row['trial']} | {series} | {best['x_floor']:.2f} (floor {row['floor']:.2f}) "
                     f"| {best['quality/precision']:.3f} | {best['quality/recall']:.3f} "
                     f"| {best['quality/class_match']:.3f} | {best['quality_ema/fid_domain']:.2f} / "
                     f"{best['quality_raw/fid_domain']:.2f} | {row['minutes']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default="sqlite:///mlruns.db", help="The sweep's MLflow store.")
    parser.add_argument("--experiment", default="dcgan", help="Its MLflow experiment.")
    parser.add_argument("--sweep", required=True, help="The sweep's --run-name.")
    parser.add_argument("--out", default="", help="Also write the rows as JSON here.")
    args = parser.parse_args()
    rows = sweep_rows(MlflowClient(args.tracking_uri), args.experiment, args.sweep)
    print(markdown(rows))
    if args.out:
        Path(args.out).write_text(json.dumps({"sweep": args.sweep, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
