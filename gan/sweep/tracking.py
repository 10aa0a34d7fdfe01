"""A sweep's MLflow bookkeeping on the driver: the parent run (params the trials share and a
description of the search), and at the end each child run closed with its outcome, the summary table and plot, and
the best trial's settings on the parent. The trials log their own runs (gan/sweep/tune.py)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from gan.config import SweepConfig, TrainConfig, to_dict
from gan.search_axes import LR_D_RATIO, TRIAL_SETTINGS, Distribution
from gan.sweep.report import write_plot, write_table
from gan.tracking import registry
from gan.tracking.runs import open_run, set_run_status


def open_parent_run(config: SweepConfig, facts: dict[str, str]) -> str:
    """The sweep's parent run: the settings every trial shares (not the searched ones, which would read as the
    sweep's), the data facts, and a description of the search."""
    scheduler = (f"PBT every {config.perturbation_interval} epochs" if config.scheduler == "pbt"
                 else config.scheduler.upper())
    axes = config.search_axes()
    over = ", ".join(f"{name} ({axis if isinstance(axis, Distribution) else ','.join(map(str, axis))})"
                     for name, axis in axes.items())
    kind = "grid" if config.grid else "random"
    trials = "a trial per grid point" if config.grid else f"{config.trial_count()} trials"
    description = (f"Ray Tune sweep, a {kind} search over {over}; {trials}, {scheduler} on quality/fid_domain; child "
                   f"runs are the trials, summary.csv and summary.png the outcome.")
    per_trial = {*axes, *(("lr_d",) if {"lr", LR_D_RATIO} & set(axes) else ())}
    shared = {k: v for k, v in to_dict(config).items() if k not in per_trial}
    return open_run(config.tracking_uri, config.experiment, config.artifact_root, config.run_name,
                    {**shared, **facts}, {"job": "sweep", "mlflow.note.content": description},
                    display_name=f"sweep {config.run_name}")


BEST_CONFIG = "best_config.yaml"


def record_outcome(config: SweepConfig, parent: str, rows: list[dict[str, Any]], best: dict[str, Any] | None,
                   best_training: TrainConfig | None = None) -> None:
    """Close each child run with its outcome (adding its run_id and best model_uri to its row); put the table, the
    plot, the best trial and its whole training config (BEST_CONFIG, for `jobs.train --config`) on the parent, and
    mark the parent finished."""
    from mlflow import MlflowClient

    client = MlflowClient(config.tracking_uri)
    experiment_id = client.get_run(parent).info.experiment_id
    outcome = {"completed": "FINISHED", "stopped early": "KILLED"}
    searched = tuple(name for name in config.search_axes() if name not in TRIAL_SETTINGS)
    for row in rows:
        children = client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}' and "
                                                                      f"tags.`tune.trial_id` = '{row['trial_id']}'")
        row["run_id"] = children[0].info.run_id if children else ""
        row["model_uri"] = ""  # the trial's best logged generator (lowest fid_domain)
        if children:
            set_run_status(config.tracking_uri, row["run_id"], outcome.get(row["status"], "FAILED"), row["status"])
            if models := registry.run_models(client, row["run_id"]):
                row["model_uri"] = f"models:/{models[0].model_id}"
    with tempfile.TemporaryDirectory() as tmp:
        client.log_artifact(parent, str(write_table(rows, Path(tmp) / "summary.csv")))
        client.log_artifact(parent, str(write_plot(rows, Path(tmp) / "summary.png", searched)))
    if best:
        for key in (*TRIAL_SETTINGS, *searched, "trial_id", "run_id", "model_uri"):
            client.set_tag(parent, f"best.{key}", str(best[key]))
        client.log_metric(parent, "best/fid_domain", best["best_fid_domain"])
    if best_training is not None:
        header = (f"# The best trial of sweep {config.run_name!r} (fid_domain {best['best_fid_domain']:.4g}, trial "
                  f"{best['trial_id']}): python -m jobs.train --config {BEST_CONFIG} [--kimg N]\n")
        client.log_text(parent, header + yaml.safe_dump(to_dict(best_training), sort_keys=False), BEST_CONFIG)
    set_run_status(config.tracking_uri, parent, "FINISHED", "completed")
