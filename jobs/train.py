"""Entry point: parse the config, check it against the shards, open the MLflow run, run the TorchTrainer.

    python -m jobs.train                                         # data/mnist, 120 kimg (about 6 minutes on 2 cores)
    python -m jobs.train --shards data/digits --epochs 40        # the digits, bounded in epochs
    ray job submit --working-dir . -- python -m jobs.train --config my.yaml
"""
from __future__ import annotations

import sys

from gan import registry, storage
from gan.augment import parse_policy
from gan.classifier import ensure_reference
from gan.config import ConfigError, TrainConfig, parse, to_dict
from gan.data import plan_epoch
from gan.manifest import ManifestError, read_manifest
from gan.shard_reader import DataError
from gan.tracking import check_tracking


def check_against_shards(config: TrainConfig) -> dict[str, str]:
    """Fail before Ray starts when the shards cannot feed this config; returns facts about them for MLflow."""
    storage.configure(config.s3_endpoint_url)
    if config.tracking:
        check_tracking(config.tracking_uri)
    storage.check_bucket(config.storage_path)
    manifest = read_manifest(config.shards)
    if manifest.resolution != config.resolution:
        raise ConfigError(f"--resolution={config.resolution} but the shards at {config.shards} are "
                          f"{manifest.resolution}px: pass --resolution {manifest.resolution} or rebuild the shards")
    plan = plan_epoch(manifest.shards("train"), config.num_workers, config.batch_size, 0, config.seed,
                      config.steps_per_epoch)
    facts = {}
    if config.tracking and config.register:  # before the classifier trains: a refused name fails in a second
        facts["registry.name"] = registry.choose_name(config.tracking_uri, config.register_as, manifest.source,
                                                      manifest.dataset_hash)
    if config.quality_every:
        reference, built = ensure_reference(config.shards, manifest, strict=config.strict)
        print(f"train: domain classifier for quality metrics {'trained' if built else 'loaded'} "
              f"(holdout accuracy {reference.test_accuracy:.3f})", flush=True)
        if reference.problems:
            print(f"train: the quality reference skipped {len(reference.problems)} bad shard(s) and is not cached "
                  f"(rebuilt once they are fixed; --strict fails instead): {'; '.join(reference.problems)}",
                  file=sys.stderr, flush=True)
            facts["quality.reference_bad_shards"] = str(len(reference.problems))
        facts["quality.classifier_test_accuracy"] = f"{reference.test_accuracy:.4f}"
        facts["quality.reference_images"] = (f"{reference.statistics_images} train images"
                                             + (" the classifier was not fitted on" if reference.statistics_unseen
                                                else " (all; the classifier was fitted on them too)"))
    policy = parse_policy(config.diffaugment, manifest.channels)
    facts["augment.policy"] = ",".join(policy) or "off"  # what --diffaugment (e.g. auto) means on these shards
    return {**facts, "data.dataset_hash": manifest.dataset_hash, "data.source": manifest.source,
            "data.train_samples": str(manifest.sample_count("train")), "data.channels": str(manifest.channels),
            "data.image_format": manifest.image_format, "data.steps_per_epoch": str(plan.steps)}


class RunFailed(RuntimeError):
    """Training failed; the message is the failing rank's own error in one line, not Ray's wrapper and traceback."""


def run(config: TrainConfig, data_facts: dict[str, str]):
    """Open the MLflow run (unless --no-tracking), fit the TorchTrainer, close the run; returns Ray's Result."""
    from gan.tracking import close_run, open_run
    from gan.worker import build_trainer, failure_summary

    from jobs.ray_session import start_or_join

    start_or_join()
    run_id = None
    if config.tracking:
        run_id = open_run(config.tracking_uri, config.experiment, config.artifact_root, config.run_name,
                          {**to_dict(config), **data_facts}, {"job": "train"})
        print(f"train: MLflow run {run_id} in experiment {config.experiment!r} at {config.tracking_uri}", flush=True)
    print(f"train: Ray Train run {config.run_name!r} in {config.storage_path}", flush=True)
    status, failure = "FAILED", "interrupted"
    try:
        result = build_trainer(config, run_id).fit()
        status, failure = "FINISHED", ""
        if run_id and "registry.name" in data_facts:
            registry.report_registration("train", config.tracking_uri, run_id, data_facts)
        return result
    except Exception as error:
        failure = failure_summary(error)
        raise RunFailed(failure) from error
    finally:
        if run_id:
            close_run(config.tracking_uri, run_id, status, failure)


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse(TrainConfig, argv).resolved()
        data_facts = check_against_shards(config)
    except (ConfigError, ManifestError, DataError, storage.StorageError, ValueError) as error:
        print(f"train: {error}", file=sys.stderr)
        return 2
    from gan.worker import error_line

    try:
        result = run(config, data_facts)
    except Exception as error:  # RunFailed from fit(), or Ray / MLflow failing around it: one line either way
        reason = str(error) if isinstance(error, RunFailed) else error_line(error)
        print(f"train: failed: {reason}; the latest complete checkpoint is in "
              f"{storage.join(config.storage_path, config.run_name)} (rerun with the same --run-name to resume)",
              file=sys.stderr)
        return 1
    print(f"train: done; final metrics {({k: round(v, 4) for k, v in result.metrics.items()})}; "
          f"checkpoint {result.checkpoint.path if result.checkpoint else None}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
