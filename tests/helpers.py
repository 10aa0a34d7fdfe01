"""What the tests share besides fixtures (those live in conftest.py): the repository, a clean environment for
subprocesses, the test store's keys, and readers of what a run left in MLflow."""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def clean_env() -> dict[str, str]:
    """This environment without S3, MLflow and Ray addresses, for subprocesses that must get those from the test."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "RAY_ADDRESS"))}


S3_ACCESS_KEY = "dcgan-test-key"
S3_SECRET_KEY = "dcgan-test-secret-5f1c9e"  # tests search logs and MLflow for this string
BUCKET = "dcgan"


# A configured case for ASHA: trials run one at a time in grid order (lr, then Adam's beta1), and with
# this tiny model a large learning rate measurably worsens fid_domain in the first epoch (measured 4100 vs 4096), so
# the last two trials land below the rung-1 cut-off that the first two set, and ASHA must stop them. The case was
# measured on the plain DCGAN step, so EMA and DiffAugment stay off here: they are tested on their own.
TINY_SWEEP = ["--epochs", "3", "--steps-per-epoch", "4", "--batch-size", "16", "--g-features", "8", "--d-features", "8",
              "--quality-every", "1", "--quality-samples", "200", "--num-samples", "1", "--grid",
              "--search", "lr=1e-6,2e-3 latent_dim=16 beta1=0.5,0.7", "--ema-half-life-kimg", "0", "--diffaugment", ""]


def metric_values(client, run_id: str, key: str) -> list[float]:
    """A run's values of one metric in step order (MLflow returns them in no set order)."""
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))]


def new_lows(values: list[float]) -> list[float]:
    """The values that beat every one before them: what a run logs as best/fid_domain from its quality series."""
    return [value for i, value in enumerate(values) if value < min(values[:i], default=float("inf"))]


def fid_of_model(uri: str, tracking_uri: str, shards: Path, samples: int, seed: int = 0) -> float:
    """quality/fid_domain of a logged generator (any MLflow model URI), loaded as a user would and measured here
    the way a run's rank 0 measures it (gan/metrics/quality.py evaluate_generator: the same seeded z, for a
    conditional generator the same classes, averaged over the same samples: measured_noise, quality_of_draws)."""
    import torch

    from gan.metrics.classifier import load_reference, reference_location
    from gan.metrics.quality import measured_noise, quality_of_draws
    from gan.shards.manifest import read_manifest
    from gan.tracking.sampling import load

    sampler = load(uri, tracking_uri)
    reference = load_reference(reference_location(str(shards), read_manifest(str(shards))))
    noise, classes = measured_noise(reference, sampler.latent_dim, samples, seed, sampler.num_classes > 0)
    with torch.no_grad():
        features = reference.classifier().features(sampler(noise, classes).float())
    return quality_of_draws(reference, features, samples)["quality/fid_domain"]


def logged_models(tracking_uri: str, run_id: str) -> list:
    """The run's logged generators, best (lowest quality/fid_domain) first."""
    from mlflow import MlflowClient

    from gan.tracking.registry import run_models

    return run_models(MlflowClient(tracking_uri), run_id)


def sweep_command(shards: Path, work: Path, *extra: str) -> list[str]:
    """The tiny sweep 'sw', tracked in work/mlruns.db with artifacts in work/mlartifacts."""
    return [sys.executable, "-m", "jobs.sweep", "--shards", str(shards), *TINY_SWEEP, "--run-name", "sw",
            "--tracking-uri", f"sqlite:///{work / 'mlruns.db'}", "--artifact-root", str(work / "mlartifacts"),
            "--storage-path", str(work / "ray"), *extra]


def export_digits(out: Path, layout: str) -> Path:
    """The 1,797 digits as 8x8 PNGs the way a user's folder holds them (bench/export_folder.py): one sub-folder per
    class, listed class by class (`classes`), or one folder without labels (`flat`)."""
    from bench.export_folder import export, packaged_images

    export(*packaged_images("digits", ""), out, layout)
    return out


def write_unshuffled_shards(data, out: Path, samples_per_shard: int = 100) -> Path:
    """`data`'s images in 100-image shards in the order the source lists them, all train (what make_shards wrote for
    a class folder before it shuffled): shards of one or two classes each."""
    import numpy as np

    from gan.shards.writer import ShardPlan, finish_manifest, new_manifest, write_shard

    count = len(data.images)
    plans = [ShardPlan("train", f"train-{n:06d}.tar", np.arange(start, min(start + samples_per_shard, count)))
             for n, start in enumerate(range(0, count, samples_per_shard))]
    written = [write_shard(str(out), plan, data.images[plan.indices], data.labels[plan.indices], "raw",
                           len(data.class_names)) for plan in plans]
    finish_manifest(str(out), new_manifest(data, "raw"), plans, written)
    return out
