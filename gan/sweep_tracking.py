"""A sweep's MLflow bookkeeping on the driver: its up-front checks, the parent run (params the trials share and a
description of the search), and at the end each child run closed with its outcome, the summary table and plot, and
the best trial's settings on the parent. The trials log their own runs (gan/sweep.py)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from gan import registry
from gan.config import ConfigError, SweepConfig, to_dict
from gan.sweep_report import write_plot, write_table
from gan.tracking import open_run, set_run_status


def check_sweep(config: SweepConfig) -> None:
    """Raise ConfigError naming the sweep setting at fault, before Ray starts."""
    try:
        lists = config.search_lists()
    except ConfigError:
        raise  # --search names its own problem
    except ValueError:
        raise ConfigError("--latent-dims / --lr-grid / --lr-d-ratios take comma-separated numbers, e.g. "
                          "--latent-dims 32,64,100") from None
    dims, grid, ratios = lists["latent_dim"], lists["lr"], lists["lr_d_ratio"]
    if not dims or min(dims) < 1 or any(lr <= 0 or lr > 1 for lr in grid):
        raise ConfigError("--latent-dims must be >= 1 and --lr-grid values in (0, 1]")
    if any(not 0 < ratio <= 100 for ratio in ratios):
        raise ConfigError("--lr-d-ratios must be in (0, 100], e.g. 1,4 (1 = one shared learning rate)")
    if not config.lr_grid and config.lr_min >= config.lr_max:
        raise ConfigError(f"--lr-min={config.lr_min} must be below --lr-max={config.lr_max}")
    if config.scheduler == "pbt" and config.perturbation_interval >= config.epochs:
        raise ConfigError(f"--perturbation-interval={config.perturbation_interval} must be below --epochs="
                          f"{config.epochs}, or PBT never perturbs a trial")
    if not config.quality_every:
        raise ConfigError("--quality-every 0: the sweep ranks trials by quality/fid_domain; give it epochs >= 1")


def open_parent_run(config: SweepConfig, facts: dict[str, str]) -> str:
    """The sweep's parent run: the settings every trial shares (not the searched ones, which would read as the
    sweep's), the data facts, and a description of the search."""
    search = (f"a grid of lr ({config.lr_grid})" if config.lr_grid
              else f"random lr ({config.lr_min:g}..{config.lr_max:g})")
    scheduler = (f"PBT every {config.perturbation_interval} epochs" if config.scheduler == "pbt"
                 else config.scheduler.upper())
    searched = config.searched_fields()
    extras = "".join(f", {name} ({','.join(map(str, values))})" for name, values in searched.items())
    description = (f"Ray Tune sweep over {search}, latent size ({config.latent_dims}), D/G lr ratio "
                   f"({config.lr_d_ratios}){extras}; {config.num_samples} sample(s), {scheduler} on "
                   f"quality/fid_domain; child runs are the trials, summary.csv and summary.png the outcome.")
    per_trial = {"lr", "lr_d", "latent_dim", *searched}
    shared = {k: v for k, v in to_dict(config).items() if k not in per_trial}
    return open_run(config.tracking_uri, config.experiment, config.artifact_root, config.run_name,
                    {**shared, **facts}, {"job": "sweep", "mlflow.note.content": description},
                    display_name=f"sweep {config.run_name}")


def record_outcome(config: SweepConfig, parent: str, rows: list[dict[str, Any]], best: dict[str, Any] | None) -> None:
    """Close each child run with its outcome (adding its run_id and best model_uri to its row); put the table, the
    plot and the best trial on the parent, and mark the parent finished."""
    from mlflow import MlflowClient

    client = MlflowClient(config.tracking_uri)
    experiment_id = client.get_run(parent).info.experiment_id
    outcome = {"completed": "FINISHED", "stopped early": "KILLED"}
    searched = tuple(config.searched_fields())
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
        for key in ("lr", "latent_dim", "lr_d_ratio", *searched, "trial_id", "run_id", "model_uri"):
            client.set_tag(parent, f"best.{key}", str(best[key]))
        client.log_metric(parent, "best/fid_domain", best["best_fid_domain"])
    set_run_status(config.tracking_uri, parent, "FINISHED", "completed")
