"""Hyper-parameter sweeps: Ray Tune over a driver function that builds one TorchTrainer per trial (the pattern Ray
documents for Train V2; `Tuner(trainer)` is gone), one nested MLflow run per trial under one parent run.

The search space is what --search names: any training field, and the D/G learning-rate ratio (TTUR), each a list or
(random search) a distribution; random by default, a full grid with --grid. ASHA stops trials whose
`quality/fid_domain` lags at each rung; trials report through Train's TuneReportCallback, once per epoch. PBT needs
what that callback cannot give (Train V2 passes Tune a checkpoint *path*, PBT clones Tune checkpoints), so under PBT
a trial trains in generations: one Train run per perturbation interval, each reported to Tune with its checkpoint.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from ray import tune
from ray.train import Checkpoint
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

from gan.config import SweepConfig, TrainConfig, from_dict, to_dict
from gan.run.worker import build_trainer
from gan.search_axes import LR_D_RATIO, TRIAL_SETTINGS, Distribution
from gan.shards import storage
from gan.tracking.runs import open_run, set_run_status
from gan.training.checkpoint import META_FILE

METRIC, MODE = "quality/fid_domain", "min"


TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def searched_extras(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's --search settings: its parameters that name training fields, besides lr and latent size."""
    return {key: value for key, value in params.items() if key in TRAIN_FIELDS and key not in TRIAL_SETTINGS}


def trial_name(params: dict[str, Any]) -> str:
    ratio = float(params.get("lr_d_ratio", 1.0))
    return " ".join([f"lr={params.get('lr', math.nan):.1e} nz={params.get('latent_dim', 0)}",
                     *([f"d/g={ratio:g}"] if ratio != 1 else []),
                     *(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                       for key, value in searched_extras(params).items())])


def search_space(config: SweepConfig) -> dict[str, Any]:
    """Tune's param space: every --search axis (grid, choice or distribution), and the trial settings every row of
    the summary shows (lr, latent size, D/G ratio) at their flag's value where they are not searched."""
    space: dict[str, Any] = {"lr": config.lr, "latent_dim": config.latent_dim, LR_D_RATIO: 1.0}
    for name, axis in config.search_axes().items():
        if isinstance(axis, Distribution):
            space[name] = _tune_distribution(axis)
        elif len(axis) == 1:
            space[name] = axis[0]
        else:
            space[name] = tune.grid_search(axis) if config.grid else tune.choice(axis)
    return space


def _tune_distribution(axis: Distribution) -> Any:
    return (tune.loguniform if axis.kind == "loguniform" else tune.uniform)(axis.low, axis.high)


def pbt_mutations(config: SweepConfig) -> dict[str, Any]:
    """What PBT may perturb: the learning rates (SweepConfig.check makes sure lr is an axis). Not the latent size:
    it fixes the weights' shapes, so a clone keeps its leader's along with the weights."""
    axes = config.search_axes()
    lr = axes["lr"]
    mutations: dict[str, Any] = {"lr": _tune_distribution(lr) if isinstance(lr, Distribution) else lr}
    ratios = axes.get(LR_D_RATIO)
    if isinstance(ratios, list) and len(ratios) > 1:
        mutations[LR_D_RATIO] = ratios
    return mutations


def trial_config(base: TrainConfig, params: dict[str, Any], trial_id: str) -> TrainConfig:
    """The sweep's training config with one trial's settings (every parameter that names a training field sets
    it); its Ray run and checkpoints live under the sweep's."""
    ratio = float(params.get("lr_d_ratio", 1.0))
    return dataclasses.replace(base, **searched_extras(params), lr=float(params["lr"]),
                               latent_dim=int(params["latent_dim"]),
                               lr_d=float(params["lr"]) * ratio if ratio != 1 else 0.0,
                               run_name=f"{base.run_name}-{trial_id}",
                               storage_path=storage.join(base.storage_path, base.run_name), max_failures=0)


def best_config(config: SweepConfig, train: TrainConfig, best: dict[str, Any]) -> TrainConfig:
    """The best trial's whole training config, for a follow-up run (`jobs.train --config`): its searched settings on
    the sweep's shared ones, with the sweep's storage and retries, no run name (a follow-up gets its own) and no
    length (the trials' epoch bound is ASHA's, not a choice for the long run: the default length, or --kimg)."""
    searched = {name: best[name] for name in config.search_axes() if name in best}
    params = {"lr": best["lr"], "latent_dim": best["latent_dim"], "lr_d_ratio": best["lr_d_ratio"], **searched}
    return dataclasses.replace(trial_config(train, params, "best"), run_name="", storage_path=train.storage_path,
                               max_failures=train.max_failures, epochs=0, kimg=0.0)


def run_trial(params: dict[str, Any]) -> None:
    """One trial: the sweep's training config with this trial's settings, in a child MLflow run."""
    trial_id = tune.get_context().get_trial_id()
    train = trial_config(from_dict(TrainConfig, params["train"]), params, trial_id)
    name = trial_name(params)
    run_id = None
    if train.tracking:
        run_id = open_run(train.tracking_uri, train.experiment, train.artifact_root, train.run_name, to_dict(train),
                          {"tune.trial_id": trial_id, "job": "sweep trial"}, display_name=name,
                          parent_run_id=params["parent_run_id"], count_resume=not params.get("pbt_interval"))
    if params.get("pbt_interval"):
        _train_in_generations(train, run_id, trial_id, params["pbt_interval"], float(params.get("lr_d_ratio", 1.0)))
    else:
        build_trainer(train, run_id, callbacks=[TuneReportCallback()]).fit()
    if run_id:
        set_run_status(train.tracking_uri, run_id, "FINISHED", "completed")


def _train_in_generations(train: TrainConfig, run_id: str | None, trial_id: str, interval: int,
                          lr_d_ratio: float) -> None:
    """PBT: `interval` epochs per Train run, each reported with its checkpoint. Tune restarts this function with a
    leader's checkpoint and perturbed rates when PBT exploits; each run starts from the checkpoint it is handed
    (its name derives from that checkpoint, so a resumed sweep continues an interrupted run, never a stale one)."""
    start = tune.get_checkpoint()
    meta = _checkpoint_meta(start) if start else {"epoch": 0, "step": 0}
    if run_id:
        donor = _written_by(meta, train, trial_id) if start else trial_id
        _record_generation(train, run_id, meta, lr_d_ratio, cloned_from=donor if donor != trial_id else None)
    epoch = meta["epoch"]
    while epoch < train.epochs:
        target = min(epoch + interval, train.epochs)
        origin = hashlib.sha1(start.path.encode()).hexdigest()[:6] if start else "new"
        generation = dataclasses.replace(train, epochs=target, run_name=f"{train.run_name}-e{epoch}-{origin}")
        result = build_trainer(generation, run_id, start_checkpoint=start).fit()
        start, epoch = result.checkpoint, target
        tune.report(result.metrics, checkpoint=tune.Checkpoint(start.path, start.filesystem))


def _record_generation(train: TrainConfig, run_id: str, meta: dict[str, Any], lr_d_ratio: float,
                       cloned_from: str | None) -> None:
    """The rates this trial trains with from here (series pbt/lr, pbt/lr_d_ratio) and, when PBT handed it another
    trial's weights, which and when (tag pbt.clones, one entry per clone)."""
    from mlflow import MlflowClient

    client = MlflowClient(train.tracking_uri)
    client.log_metric(run_id, "pbt/lr", train.lr, step=meta["step"])
    client.log_metric(run_id, "pbt/lr_d_ratio", lr_d_ratio, step=meta["step"])
    if cloned_from:
        clones = client.get_run(run_id).data.tags.get("pbt.clones", "")
        entry = f"{cloned_from} at epoch {meta['epoch']}"
        if not clones.endswith(entry):  # a resumed sweep may replay this start
            client.set_tag(run_id, "pbt.clones", f"{clones}; {entry}" if clones else entry)


def _written_by(meta: dict[str, Any], train: TrainConfig, trial_id: str) -> str:
    """The trial whose generation wrote a checkpoint: its Train run is named `<sweep>-<trial id>-e<epoch>-<origin>`."""
    sweep_name = train.run_name.removesuffix(f"-{trial_id}")
    return meta["config"]["run_name"].removeprefix(f"{sweep_name}-").split("-")[0]


def _checkpoint_meta(checkpoint: Checkpoint) -> dict[str, Any]:
    with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{META_FILE}") as stream:
        return json.loads(stream.read())


def _trial_trainable():
    """The trial function holds no CPU (its Train workers hold them all), so on a 2-CPU machine one trial's two
    workers still fit; Ray needs some resource in a bundle, hence a token 256 MiB of memory."""
    return tune.with_resources(run_trial, {"cpu": 0, "memory": 256 * 1024**2})


def build_tuner(config: SweepConfig, train: TrainConfig, parent_run_id: str | None) -> tune.Tuner:
    if config.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", max_t=train.epochs, grace_period=config.grace_period,
                                  reduction_factor=config.reduction_factor)
    elif config.scheduler == "pbt":
        # Synchronous: every trial reaches the interval (then waits, paused) before the bottom quarter clones the
        # top quarter, so the population is compared at equal epochs with any --max-concurrent-trials.
        scheduler = PopulationBasedTraining(time_attr="epoch", perturbation_interval=config.perturbation_interval,
                                            hyperparam_mutations=pbt_mutations(config), synch=True)
    else:
        scheduler = FIFOScheduler()
    trainable = _trial_trainable()
    filesystem, storage_path = storage.pyarrow_filesystem(train.storage_path)  # s3:// with our endpoint too
    return tune.Tuner(
        trainable,
        param_space={**search_space(config), "train": to_dict(train), "parent_run_id": parent_run_id,
                     "pbt_interval": config.perturbation_interval if config.scheduler == "pbt" else 0},
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, scheduler=scheduler, num_samples=config.trial_count(),
                                    max_concurrent_trials=config.max_concurrent_trials,
                                    trial_dirname_creator=lambda trial: f"trial-{trial.trial_id}"),
        run_config=tune.RunConfig(name=train.run_name, storage_path=storage_path, storage_filesystem=filesystem,
                                  failure_config=tune.FailureConfig(fail_fast=False),
                                  # PBT would otherwise clone into a trial at its last epoch, for nothing.
                                  stop={"epoch": train.epochs} if config.scheduler == "pbt" else None),
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
        history = _metric_history(result)
        params = result.config or {}
        error = result.error
        metrics = result.metrics or {}
        epochs = int(metrics.get("epoch", 0))
        status = ("diverged" if error and "diverged" in str(error) else "failed" if error
                  else "completed" if ran_its_length(metrics, params.get("train", {})) else "stopped early")
        rows.append({"trial_id": Path(result.path).name.removeprefix("trial-"),
                     "run_name": trial_name(params),
                     "lr": params.get("lr"), "latent_dim": params.get("latent_dim"),
                     "lr_d_ratio": params.get("lr_d_ratio", 1.0), **searched_extras(params), "status": status,
                     "epochs": epochs, "final_fid_domain": history[-1] if history else math.nan,
                     "best_fid_domain": min(history) if history else math.nan})
    return rows


def ran_its_length(last_report: dict[str, Any], train: dict[str, Any]) -> bool:
    """Whether a trial's last report is its run's end: all its --epochs, or its --kimg when that ends it sooner (a
    trial the scheduler stopped ends short of both)."""
    kimg_target = train.get("kimg", 0)
    return (int(last_report.get("epoch", 0)) >= train.get("epochs", 0)
            or bool(kimg_target and last_report.get("kimg", 0) >= kimg_target))


def _metric_history(result: tune.Result) -> list[float]:
    """The trial's quality per report. Tune rewrites result.json when PBT restores a paused trial (losing the earlier
    reports); progress.csv keeps them, so the longer of the two is the history."""
    import pandas

    frames = [result.metrics_dataframe]
    try:
        with result.filesystem.open_input_stream(f"{result.path}/progress.csv") as stream:
            frames.append(pandas.read_csv(stream))
    except (OSError, pandas.errors.ParserError, pandas.errors.EmptyDataError):
        pass  # no CSV (or a half-written one): the JSON history is what there is
    histories = [frame[METRIC].dropna().tolist() for frame in frames if frame is not None and METRIC in frame]
    return max(histories, key=len, default=[])
