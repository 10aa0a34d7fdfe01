"""Entry point: a Ray Tune sweep over learning rate and latent size, one parent MLflow run with a child per trial.

    python -m jobs.sweep --shards data/digits --num-samples 8 --epochs 10
    python -m jobs.sweep --run-name my-sweep --resume          # continue an interrupted sweep
"""
from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

from gan import registry, storage
from gan.config import ConfigError, SweepConfig, TrainConfig, parse, to_dict
from gan.manifest import ManifestError
from jobs.train import check_against_shards


def check_sweep(config: SweepConfig) -> None:
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


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse(SweepConfig, argv).resolved()
        check_sweep(config)
        data_facts = check_against_shards(config)
    except (ConfigError, ManifestError, storage.StorageError, ValueError) as error:
        print(f"sweep: {error}", file=sys.stderr)
        return 2

    from gan.sweep import build_tuner, restore_tuner, summarise
    from gan.sweep_report import best_trial
    from gan.tracking import open_run, set_run_status

    from jobs.ray_session import start_or_join

    start_or_join()
    train = TrainConfig(**{f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig)})
    parent = None
    if config.tracking:
        search = (f"a grid of lr ({config.lr_grid})" if config.lr_grid
                  else f"random lr ({config.lr_min:g}..{config.lr_max:g})")
        scheduler = (f"PBT every {config.perturbation_interval} epochs" if config.scheduler == "pbt"
                     else config.scheduler.upper())
        extras = "".join(f", {name} ({','.join(map(str, values))})"
                         for name, values in config.searched_fields().items())
        description = (f"Ray Tune sweep over {search}, latent size ({config.latent_dims}), D/G lr ratio "
                       f"({config.lr_d_ratios}){extras}; {config.num_samples} sample(s), {scheduler} on "
                       f"quality/fid_domain; child runs are the trials, summary.csv and summary.png the outcome.")
        parent = open_run(config.tracking_uri, config.experiment, config.artifact_root, config.run_name,
                          {**_swept_out(to_dict(config), config), **data_facts},
                          {"job": "sweep", "mlflow.note.content": description},
                          display_name=f"sweep {config.run_name}")
    tuner = restore_tuner(config, train) if config.resume else None
    if config.resume and tuner is None:
        print(f"sweep: nothing to resume at {storage.join(config.storage_path, config.run_name)}", file=sys.stderr)
        return 2
    print(f"sweep: {'resuming' if tuner else 'starting'} {config.run_name!r} in {config.storage_path}", flush=True)
    results = (tuner or build_tuner(config, train, parent)).fit()
    rows = summarise(results)
    best = best_trial(rows)
    if parent:
        _record(config, parent, rows, best)
        set_run_status(config.tracking_uri, parent, "FINISHED", "completed")
        if best and best.get("run_id") and "registry.name" in data_facts:
            # once, the best trial's best generator
            registry.report_registration("sweep", config.tracking_uri, best["run_id"], data_facts)
    width = max(len(row["run_name"]) for row in rows)
    for row in rows:
        print(f"sweep: {row['run_name']:<{width}} {row['status']:<14} epochs {row['epochs']:>3}  "
              f"best fid_domain {row['best_fid_domain']:.1f}", flush=True)
    if best:
        print(f"sweep: best trial {best['run_name']} (fid_domain {best['best_fid_domain']:.1f})"
              + (f"; its generator: {best['model_uri']}" if best.get("model_uri") else ""), flush=True)
    return 0


def _swept_out(params: dict, config: SweepConfig) -> dict:
    """The parent's params without the fields each trial sets for itself (they would read as the sweep's)."""
    per_trial = {"lr", "lr_d", "latent_dim", *config.searched_fields()}
    return {k: v for k, v in params.items() if k not in per_trial}


def _record(config: SweepConfig, parent: str, rows: list[dict], best: dict | None) -> None:
    """Close each child run with its outcome; put the table, the plot and the best trial on the parent."""
    from mlflow import MlflowClient

    from gan.sweep_report import write_plot, write_table
    from gan.tracking import set_run_status

    client = MlflowClient(config.tracking_uri)
    experiment_id = client.get_run(parent).info.experiment_id
    outcome = {"completed": "FINISHED", "stopped early": "KILLED"}
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
        client.log_artifact(parent, str(write_plot(rows, Path(tmp) / "summary.png", tuple(config.searched_fields()))))
    if best:
        for key in ("lr", "latent_dim", "lr_d_ratio", *config.searched_fields(), "trial_id", "run_id", "model_uri"):
            client.set_tag(parent, f"best.{key}", str(best[key]))
        client.log_metric(parent, "best/fid_domain", best["best_fid_domain"])


if __name__ == "__main__":
    sys.exit(main())
