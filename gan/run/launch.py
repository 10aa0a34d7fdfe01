"""One training run from the driver's side: check its inputs and build the quality reference before Ray starts
(`prepare`), then open the MLflow run, fit the TorchTrainer, register the best generator and close the run (`run`).
jobs/train.py, the sweep and bench/ all start runs through these two."""
from __future__ import annotations

from gan.config import TrainConfig, to_dict
from gan.metrics.classifier import prepare_reference
from gan.run.preflight import check_inputs
from gan.tracking import registry


class RunFailed(RuntimeError):
    """Training failed; the message is the failing rank's own error in one line, not Ray's wrapper and traceback."""


def prepare(config: TrainConfig, job: str = "train") -> dict[str, str]:
    """Fail before Ray starts when the inputs cannot serve this config; else the facts the MLflow run records."""
    manifest, facts = check_inputs(config)
    if config.quality_every:
        facts.update(prepare_reference(config.shards, manifest, config.strict, job))
    return facts


def run(config: TrainConfig, facts: dict[str, str]):
    """Open the MLflow run (unless --no-tracking), fit the TorchTrainer, close the run; returns Ray's Result."""
    from gan.run.ray_session import start_or_join
    from gan.run.worker import build_trainer, failure_summary
    from gan.tracking.runs import close_run, open_run, ui_link

    start_or_join()
    run_id = None
    if config.tracking:
        run_id = open_run(config.tracking_uri, config.experiment, config.artifact_root, config.run_name,
                          {**to_dict(config), **facts}, {"job": "train"})
        print(f"train: MLflow run {run_id} in experiment {config.experiment!r} at {config.tracking_uri}; in the UI"
              f"{'' if config.tracking_uri.startswith('http') else ' (mlflow ui --backend-store-uri URI)'}: "
              f"{ui_link(config.tracking_uri, run_id)}", flush=True)
    print(f"train: Ray Train run {config.run_name!r} in {config.storage_path}", flush=True)
    status, failure = "FAILED", "interrupted"
    try:
        result = build_trainer(config, run_id).fit()
        status, failure = "FINISHED", ""
        if run_id and "registry.name" in facts:
            registry.report_registration("train", config.tracking_uri, run_id, facts)
        return result
    except Exception as error:
        failure = failure_summary(error)
        raise RunFailed(failure) from error
    finally:
        if run_id:
            close_run(config.tracking_uri, run_id, status, failure)
