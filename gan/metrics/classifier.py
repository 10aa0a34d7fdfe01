"""The domain classifier whose feature space the quality metrics use, and the cached real statistics.

Inception-v3 weights cannot be downloaded here, so — as MNIST-GAN papers do with a LeNet — we train a small CNN on
the real training shards and measure generated images in its penultimate-layer features. The resulting numbers
(`quality/fid_domain`, ...) compare runs on the same shard set; they are not the Inception FID of the literature.
The reference (weights, real feature statistics, the held-out images' features for the real-vs-real floor) is saved
beside the shards, named by the shards' dataset hash. The classifier never sees the holdout in training: its
features on images it has seen would flatter the real side of any comparison.

A set without labels (a flat folder: one class) gets the same network trained self-supervised instead, at the same
cost (gan/metrics/feature_tasks.py says what each space's network learns, docs/quality.md which ranks generators
as the classifier does).
"""
from __future__ import annotations

import io
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from gan.metrics.feature_tasks import CLASSIFIER, head_size, holdout_score, task_loss
from gan.shards import storage
from gan.shards.batches import normalise, rank_samples
from gan.shards.manifest import Manifest
from gan.shards.reader import DataHealth, ReadPolicy

# 4: the floor samples the holdout at random by class (holdout_labels), and unlabelled sets get a label-free space.
REFERENCE_FORMAT = 4
FEATURE_DIM = 64
MAX_REFERENCE_FEATURES = 10_000  # real train features kept for precision/recall, KID and the memorisation check
# The classifier's training is capped so it stays a small part of a run: on MNIST, 3 passes over 20,000 images
# reach 97.3% holdout accuracy; the whole reference (load, fit, features of 50,000 images) takes 52 s on 2 cores.
CLASSIFIER_EPOCHS = 3
CLASSIFIER_MAX_IMAGES = 20_000


class DomainClassifier(nn.Module):
    """A LeNet-style CNN: three conv blocks pooled to 4x4, a 64-d feature layer, a class layer. Input in [-1, 1].
    16/32/64 channels: a quarter of the arithmetic of 32/64/128; 0.973 holdout accuracy on MNIST either way."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(True), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(64 * 16, FEATURE_DIM), nn.ReLU(True),
        )
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        self.eval()
        return torch.cat([self.body(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]).double()


@dataclass
class QualityReference:
    """Everything the quality metric needs at training time, versioned by the shard set's hash."""

    dataset_hash: str
    channels: int
    num_classes: int  # outputs of the network's head (gan/metrics/feature_tasks.py: head_size)
    feature_space: str  # gan/metrics/feature_tasks.py: CLASSIFIER, ROTATION or CONTRASTIVE
    classifier_state: dict
    test_accuracy: float
    real_mean: torch.Tensor  # (FEATURE_DIM,) float64
    real_cov: torch.Tensor  # (FEATURE_DIM, FEATURE_DIM) float64
    real_features: torch.Tensor  # (<= MAX_REFERENCE_FEATURES, FEATURE_DIM) float64, a seeded sample of train
    holdout_features: torch.Tensor  # (holdout images, FEATURE_DIM) float64, in manifest order
    holdout_labels: torch.Tensor  # (holdout images,) int64: class labels (all 0 in an unlabelled set)
    train_seconds: float
    statistics_images: int  # train images behind real_mean/real_cov
    statistics_unseen: bool  # True when the classifier was not fitted on them (see train_reference)
    problems: list[str] = field(default_factory=list)  # bad shards skipped while building it (such one is not cached)

    @property
    def description(self) -> str:
        return ("domain classifier" if self.feature_space == CLASSIFIER
                else f"{self.feature_space} encoder (self-supervised: the set has no classes)")

    def classifier(self) -> DomainClassifier:
        # Built on the meta device and given the stored weights: a normal build would draw initial weights from the
        # global RNG, which on rank 0 alone (where quality is measured) shifted every later step's noise, so how
        # often a run measured quality changed what it trained.
        with torch.device("meta"):
            model = DomainClassifier(self.channels, self.num_classes)
        model.load_state_dict(self.classifier_state, assign=True)
        return model.eval()


def reference_location(shards_root: str, manifest: Manifest) -> str:
    return storage.join(shards_root, manifest.reference_name)


class ReferenceOutdated(ValueError):
    """A cached reference written by another version of this code; it is rebuilt."""


def load_split(shards_root: str, manifest: Manifest, split: str, strict: bool = True,
               health: DataHealth | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's images (float, [-1, 1]) and labels in memory, in manifest order.

    Read with the same integrity checks as training shards: a missing, corrupt or cut shard (even one cut cleanly at a
    member boundary) fails under `strict`, naming the shard, or is skipped and counted in `health`."""
    images, labels = [], []
    for image, label, _ in rank_samples(shards_root, tuple(manifest.shards(split)), manifest.image_spec,
                                        shuffle_buffer=1, seed=0, health=health or DataHealth(),
                                        policy=ReadPolicy(strict=strict)):
        images.append(image)
        labels.append(label)
    return normalise(torch.from_numpy(np.stack(images))), torch.tensor(labels)


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    features = features.double()
    return features.mean(0), torch.cov(features.T)


# The space a set without labels is measured in (gan/metrics/feature_tasks.py; chosen in docs/quality.md).
LABEL_FREE_SPACE = "rotation"


def feature_space_for(manifest: Manifest) -> str:
    """Labelled sets are measured in a class classifier's features, unlabelled ones in LABEL_FREE_SPACE."""
    return CLASSIFIER if len(manifest.class_names) >= 2 else LABEL_FREE_SPACE


def train_reference(shards_root: str, manifest: Manifest, epochs: int = CLASSIFIER_EPOCHS,
                    max_images: int = CLASSIFIER_MAX_IMAGES, seed: int = 0, strict: bool = True,
                    space: str = "") -> QualityReference:
    """Fit the network on (at most `max_images` of) the train split at its space's task, score it on the holdout
    split, and keep the real statistics of the train images it was not fitted on (all of them for a small set) and
    the holdout's features."""
    space = space or feature_space_for(manifest)
    start = time.perf_counter()
    torch.manual_seed(seed)
    shifts = np.random.default_rng(seed)
    health = DataHealth()
    images, labels = load_split(shards_root, manifest, "train", strict, health)
    test_images, test_labels = load_split(shards_root, manifest, "holdout", strict, health)
    outputs = head_size(space, len(manifest.class_names))
    model = DomainClassifier(manifest.channels, outputs)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    # The classifier is fitted on up to max_images train images; the real statistics come from the others when at
    # least as many are left (MNIST: fitted on 20,000, statistics of 40,000), so the reference, the holdout and the
    # generated images are all images the classifier has not seen. Small sets (the digits) need every image for both.
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    fit, rest = order[:max_images], order[max_images:]
    statistics = rest if len(rest) >= len(fit) else order
    # Small sets get more passes, so every set sees about the same number of updates.
    passes = max(epochs, min(8, epochs * max_images // len(images)))
    for _ in range(passes):
        model.train()
        for batch in fit[torch.randperm(len(fit))].split(64):
            # Small random shifts: the generator's digits are not centred exactly as the scans are.
            shift = tuple(int(s) for s in shifts.integers(-2, 3, size=2))
            loss = task_loss(model, torch.roll(images[batch], shifts=shift, dims=(2, 3)), labels[batch], space)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    accuracy = holdout_score(model, test_images, test_labels, space, seed)
    features = model.features(images[statistics])
    mean, cov = feature_statistics(features)
    keep = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))[:MAX_REFERENCE_FEATURES]
    return QualityReference(manifest.dataset_hash, manifest.channels, outputs, space, model.state_dict(),
                            accuracy, mean, cov, features[keep], model.features(test_images), test_labels.clamp(min=0),
                            time.perf_counter() - start, len(statistics), statistics is rest, health.problems)


def save_reference(reference: QualityReference, location: str) -> None:
    buffer = io.BytesIO()
    torch.save({"format": REFERENCE_FORMAT, **reference.__dict__}, buffer)
    storage.write_bytes(location, buffer.getvalue())


def load_reference(location: str) -> QualityReference:
    """weights_only=True: a reference file from a shared bucket cannot run code when loaded."""
    saved = torch.load(io.BytesIO(storage.read_bytes(location)), map_location="cpu", weights_only=True)
    written = saved.pop("format", None)
    if written != REFERENCE_FORMAT:
        raise ReferenceOutdated(f"the quality reference {location} has format {written}, this code reads "
                                f"{REFERENCE_FORMAT}")
    return QualityReference(**saved)


def ensure_reference(shards_root: str, manifest: Manifest, strict: bool = True) -> tuple[QualityReference, bool]:
    """The cached reference for this shard set, trained and saved first if there is none. (reference, built_now)

    Every later run is measured against a cached reference, so one built without some bad shards (not `strict`:
    `reference.problems` names them) is saved apart, as `.partial.pt`, for this run's workers only: the next run
    builds it again, and once the shards are fixed the full one is cached."""
    location = reference_location(shards_root, manifest)
    try:
        return load_reference(location), False
    except FileNotFoundError:
        pass
    except ReferenceOutdated as outdated:  # never measured against: its floor or features would differ
        print(f"{outdated}: building it again", file=sys.stderr, flush=True)
    reference = train_reference(shards_root, manifest, strict=strict)
    save_reference(reference, partial_location(location) if reference.problems else location)
    return reference, True


def partial_location(location: str) -> str:
    return location.removesuffix(".pt") + ".partial.pt"


def load_run_reference(shards_root: str, manifest: Manifest) -> QualityReference:
    """The reference the driver prepared for this run: the cached one, else the partial one it just built."""
    location = reference_location(shards_root, manifest)
    try:
        return load_reference(location)
    except FileNotFoundError:
        return load_reference(partial_location(location))


def prepare_reference(shards_root: str, manifest: Manifest, strict: bool, job: str) -> dict[str, str]:
    """Train (or load the cached) quality reference before Ray starts, say which on the console, and return what
    the MLflow run records about it: the classifier's holdout accuracy, the images behind the real statistics, and
    how many bad shards it skipped."""
    reference, built = ensure_reference(shards_root, manifest, strict=strict)
    print(f"{job}: {reference.description} for quality metrics {'trained' if built else 'loaded'} "
          f"(holdout {'' if reference.feature_space == CLASSIFIER else reference.feature_space + ' '}accuracy "
          f"{reference.test_accuracy:.3f})", flush=True)
    facts = {}
    if reference.problems:
        print(f"{job}: the quality reference skipped {len(reference.problems)} bad shard(s) and is not cached "
              f"(rebuilt once they are fixed; --strict fails instead): {'; '.join(reference.problems)}",
              file=sys.stderr, flush=True)
        facts["quality.reference_bad_shards"] = str(len(reference.problems))
    facts["quality.feature_space"] = reference.feature_space
    facts["quality.classifier_test_accuracy"] = f"{reference.test_accuracy:.4f}"
    facts["quality.reference_images"] = (f"{reference.statistics_images} train images"
                                         + (" the classifier was not fitted on" if reference.statistics_unseen
                                            else " (all; the classifier was fitted on them too)"))
    return facts
