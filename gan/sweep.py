"""Hyper-parameter sweeps: Ray Tune over a driver function that builds one TorchTrainer per trial (the pattern Ray
documents for Train V2; `Tuner(trainer)` is gone), one nested MLflow run per trial under one parent run.

The search space is learning rate x latent size x D/G learning-rate ratio (TTUR): random (log-uniform lr, choices)
by default, a full grid with --lr-grid. ASHA stops trials whose `quality/fid_domain` lags at each rung. Trials
report through Train's TuneReportCallback, once per epoch.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from gan import storage
from gan.config import SweepConfig, TrainConfig, from_dict, to_dict
from gan.tracking import open_run, set_run_status
from gan.worker import build_trainer

METRIC, MODE = "quality/fid_domain", "min"


def trial_name(lr: float, latent_dim: int, lr_d_ratio: float = 1.0) -> str:
    return f"lr={lr:.1e} nz={latent_dim}" + (f" d/g={lr_d_ratio:g}" if lr_d_ratio != 1 else "")


def search_space(config: SweepConfig) -> dict[str, Any]:
    lists = config.search_lists()
    grid = lists.pop("lr")
    if grid:
        return {"lr": tune.grid_search(grid),
                **{key: tune.grid_search(values) if len(values) > 1 else values[0] for key, values in lists.items()}}
    return {"lr": tune.loguniform(config.lr_min, config.lr_max),
            **{key: tune.choice(values) if len(values) > 1 else values[0] for key, values in lists.items()}}


def trial_config(base: TrainConfig, params: dict[str, Any], trial_id: str) -> TrainConfig:
    """The sweep's training config with one trial's settings; its Ray run and checkpoints live under the sweep's."""
    ratio = float(params.get("lr_d_ratio", 1.0))
    return dataclasses.replace(base, lr=float(params["lr"]), latent_dim=int(params["latent_dim"]),
                               lr_d=float(params["lr"]) * ratio if ratio != 1 else 0.0,
                               run_name=f"{base.run_name}-{trial_id}",
                               storage_path=storage.join(base.storage_path, base.run_name), max_failures=0)


def run_trial(params: dict[str, Any]) -> None:
    """One trial: the sweep's training config with this trial's settings, in a child MLflow run."""
    trial_id = tune.get_context().get_trial_id()
    train = trial_config(from_dict(TrainConfig, params["train"]), params, trial_id)
    name = trial_name(train.lr, train.latent_dim, float(params.get("lr_d_ratio", 1.0)))
    run_id = None
    if train.tracking:
        run_id = open_run(train.tracking_uri, train.experiment, train.artifact_root, train.run_name, to_dict(train),
                          {"tune.trial_id": trial_id, "job": "sweep trial"}, display_name=name,
                          parent_run_id=params["parent_run_id"])
    build_trainer(train, run_id, callbacks=[TuneReportCallback()]).fit()
    if run_id:
        set_run_status(train.tracking_uri, run_id, "FINISHED", "completed")


def _trial_trainable():
    """The trial function holds no CPU (its Train workers hold them all), so on a 2-CPU machine one trial's two
    workers still fit; Ray needs some resource in a bundle, hence a token 256 MiB of memory."""
    return tune.with_resources(run_trial, {"cpu": 0, "memory": 256 * 1024**2})


def build_tuner(config: SweepConfig, train: TrainConfig, parent_run_id: str | None) -> tune.Tuner:
    if config.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", max_t=train.epochs, grace_period=config.grace_period,
                                  reduction_factor=config.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    trainable = _trial_trainable()
    filesystem, storage_path = storage.pyarrow_filesystem(train.storage_path)  # s3:// with our endpoint too
    return tune.Tuner(
        trainable,
        param_space={**search_space(config), "train": to_dict(train), "parent_run_id": parent_run_id},
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, scheduler=scheduler, num_samples=config.num_samples,
                                    max_concurrent_trials=config.max_concurrent_trials,
                                    trial_dirname_creator=lambda trial: f"trial-{trial.trial_id}"),
        run_config=tune.RunConfig(name=train.run_name, storage_path=storage_path, storage_filesystem=filesystem,
                                  failure_config=tune.FailureConfig(fail_fast=False)),
    )


def restore_tuner(config: SweepConfig, train: TrainConfig) -> tune.Tuner | None:
    filesystem, storage_path = storage.pyarrow_filesystem(train.storage_path)
    path = f"{storage_path.rstrip('/')}/{train.run_name}"
    if not tune.Tuner.can_restore(path, storage_filesystem=filesystem):
        return None
    return tune.Tuner.restore(path, _trial_trainable(), resume_errored=False, restart_errored=False,
                              storage_filesystem=filesystem)


def summarise(results: tune.ResultGrid) -> list[dict[str, Any]]:
    """One row per trial: its settings, how it ended, its last and best quality."""
    rows = []
    for result in results:
        frame = result.metrics_dataframe
        history = frame[METRIC].dropna().tolist() if frame is not None and METRIC in frame else []
        params = result.config or {}
        error = result.error
        epochs = int(result.metrics.get("epoch", 0)) if result.metrics else 0
        max_epochs = params.get("train", {}).get("epochs", 0)
        status = ("diverged" if error and "diverged" in str(error) else "failed" if error
                  else "completed" if epochs >= max_epochs else "stopped early")
        rows.append({"trial_id": Path(result.path).name.removeprefix("trial-"),
                     "run_name": trial_name(params.get("lr", math.nan), params.get("latent_dim", 0),
                                            params.get("lr_d_ratio", 1.0)),
                     "lr": params.get("lr"), "latent_dim": params.get("latent_dim"),
                     "lr_d_ratio": params.get("lr_d_ratio", 1.0), "status": status,
                     "epochs": epochs, "final_fid_domain": history[-1] if history else math.nan,
                     "best_fid_domain": min(history) if history else math.nan})
    return rows
