"""Checks a run's inputs before Ray starts: the tracking store answers, the checkpoint bucket exists, the shards
exist and fit the config (resolution, enough shards and samples for every rank, classes mixed in the shards), the
registered name is free. Returns the facts about the shards that the MLflow run records as params. Trains nothing
(gan/metrics/classifier.py builds the quality reference)."""
from __future__ import annotations

import sys

from gan.config import ConfigError, TrainConfig
from gan.shards import storage
from gan.shards.batches import plan_epoch
from gan.shards.class_mix import class_mix, holdout_mix
from gan.shards.manifest import Manifest, ManifestError, read_manifest
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
    if config.resolution and manifest.resolution != config.resolution:
        fix = "index them again with --resolution" if manifest.indexed else "rebuild the shards"
        raise ConfigError(f"--resolution={config.resolution} but the shards at {config.shards} are "
                          f"{manifest.resolution}px: pass --resolution {manifest.resolution} or {fix}")
    if manifest.small_images:
        problem = (f"{manifest.small_images} images indexed at {config.shards} are smaller than "
                   f"{manifest.resolution} px and are upscaled when loaded")
        if config.strict:
            raise ManifestError(f"{problem}; index them at a lower --resolution, or run without --strict")
        _warn(problem + " (--strict refuses them)")
    if config.conditional is True and len(manifest.class_names) < 2:
        raise ConfigError(f"--conditional needs labelled shards; {config.shards} has {len(manifest.class_names)} "
                          f"class ({', '.join(manifest.class_names)}): drop --conditional, or build the shards from "
                          f"a folder with one sub-folder per class (or index them with --labels)")
    plan = plan_epoch(manifest.shards("train"), config.num_workers, config.batch_size, 0, config.seed,
                      config.steps_per_epoch)
    # what --conditional and --mode-seeking (unset: auto) mean on these shards, recorded in place of the flags' values
    conditional = config.is_conditional(len(manifest.class_names))
    facts = {"conditional": str(conditional), "mode_seeking": str(config.mode_seeking_weight(conditional))}
    if config.tracking and config.register:  # before the classifier trains: a refused name fails in a second
        facts["registry.name"] = registry.choose_name(config.tracking_uri, config.register_as, manifest.source,
                                                      manifest.dataset_hash, conditional)
    facts.update(check_class_mix(config, manifest))
    policy = parse_policy(config.diffaugment, manifest.channels)
    facts["augment.policy"] = ",".join(policy) or "off"  # what --diffaugment (e.g. auto) means on these shards
    if not policy and manifest.sample_count("train") < SMALL_SET_IMAGES:
        _warn(f"{manifest.sample_count('train')} training images: a discriminator overfits a set this small; "
              f"consider --diffaugment auto (Zhao et al. 2020; docs/quality.md)")
    return manifest, {**facts, "data.dataset_hash": manifest.dataset_hash, "data.source": manifest.source,
                      "data.train_samples": str(manifest.sample_count("train")),
                      "data.channels": str(manifest.channels),
                      "data.image_format": manifest.image_format, "data.indexed": str(manifest.indexed),
                      "data.labels": manifest.label_source, "data.steps_per_epoch": str(plan.steps)}


# Below this many training images DiffAugment is suggested: Zhao et al. (2020) show its gains grow as data shrinks
# (their smallest sets: 100 to 5,000 images), while a 5,000-image MNIST subset lost with it at the default 120 kimg
# (24 epochs, too few for D to overfit; docs/quality.md). 2,000 images are 60 epochs of that length.
SMALL_SET_IMAGES = 2_000


def check_class_mix(config: TrainConfig, manifest: Manifest) -> dict[str, str]:
    """Train shards that each hold few classes, or a holdout that does (gan/shards/class_mix.py): a warning with the
    fix, or under --strict a ManifestError. Returns the measured mix as a fact for the MLflow run."""
    shards = manifest.shards("train")
    held = holdout_mix(shards, manifest.splits.get("holdout", []), config.seed)
    if held is not None and held.skewed:
        fix = ("index it with --holdout naming shards that hold every class" if manifest.indexed
               else "rebuild the shards with jobs.make_shards")
        if config.strict:
            raise ManifestError(f"at {config.shards}, {held.describe()}; {fix}")
        _warn(f"at {config.shards}, {held.describe()}; {fix} (--strict refuses such a holdout)")
    mix = class_mix(shards, config.seed)
    if mix is None:
        if len(manifest.class_names) > 1 and any(shard.classes is None for shard in shards):
            _warn(f"the shards at {config.shards} were written before shards.json recorded class histograms, so "
                  f"their class mix is unknown (a class folder built then holds one class per shard); rebuild them "
                  f"with jobs.make_shards to have it checked")
        return {}
    if mix.skewed:
        problem = (f"the train shards at {config.shards} are not mixed: {mix.describe()}. Each rank's batches would "
                   f"hold mostly one class. Rebuild them with jobs.make_shards, which writes every split in a "
                   f"seeded random order")
        if config.strict:
            raise ManifestError(problem)
        _warn(problem + " (--strict refuses such shards)")
    return {"data.class_mix": f"{mix.mean_distance:.3f} (random shards {mix.random_distance:.3f})"}


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)
