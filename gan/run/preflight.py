"""Checks a run's inputs before Ray starts: the tracking store answers, the checkpoint bucket exists, the shards
exist and fit the config (resolution, enough shards and samples for every rank), the registered name is free.
Returns the facts about the shards that the MLflow run records as params. Trains nothing (gan/metrics/classifier.py builds
the quality reference)."""
from __future__ import annotations

from gan.config import ConfigError, TrainConfig
from gan.shards import storage
from gan.shards.batches import plan_epoch
from gan.shards.manifest import Manifest, read_manifest
from gan.tracking import registry
from gan.tracking.runs import check_tracking
from gan.training.augment import parse_policy


def check_inputs(config: TrainConfig) -> tuple[Manifest, dict[str, str]]:
    """Raise ConfigError, ManifestError or StorageError naming the problem and the fix; else (manifest, facts)."""
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
    policy = parse_policy(config.diffaugment, manifest.channels)
    facts["augment.policy"] = ",".join(policy) or "off"  # what --diffaugment (e.g. auto) means on these shards
    return manifest, {**facts, "data.dataset_hash": manifest.dataset_hash, "data.source": manifest.source,
                      "data.train_samples": str(manifest.sample_count("train")), "data.channels": str(manifest.channels),
                      "data.image_format": manifest.image_format, "data.steps_per_epoch": str(plan.steps)}
