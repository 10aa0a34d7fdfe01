"""Image-quality metrics in the domain classifier's feature space (see gan/metrics/classifier.py for why not Inception):

- Fréchet distance between real and generated feature Gaussians (Heusel et al. 2017), as `quality/fid_domain`;
- improved precision and recall with k-NN manifolds (Kynkäänniemi et al. 2019), as `quality/precision` and
  `quality/recall`: precision = share of generated samples inside the real manifold (fidelity), recall = share of
  real samples inside the generated manifold (coverage; near 0 under mode collapse);
- KID, the unbiased squared MMD with a cubic polynomial kernel (Bińkowski et al. 2018), as `quality/kid` (mean over
  subsets) and `quality/kid_std`: unlike FID it has no bias at the small sample counts a CPU can afford;
- the floor: the same metrics for as many *real held-out* images as generated ones, against the same train
  statistics (`quality/fid_domain_floor`, `quality/kid_floor`, ...). A generator at its floor is as close to the data
  as the data is to itself;
- the memorisation share (`quality/memorised_share`): generated images closer to their nearest training image than
  that training image is to its own nearest neighbour among the training images; beside it, the same share for
  held-out real images (`quality/memorised_share_floor`). A copying GAN scores near 1.
"""
from __future__ import annotations

import itertools
import time

import numpy as np
import torch

from gan.metrics.classifier import QualityReference, feature_statistics
from gan.shards.sources import stratified_choice


def frechet_distance(mean_a: torch.Tensor, cov_a: torch.Tensor, mean_b: torch.Tensor, cov_b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2), with the trace of the square root taken from the
    eigenvalues of the symmetric S_a^1/2 S_b S_a^1/2; tiny negative eigenvalues (round-off) are clamped to 0."""
    mean_a, cov_a, mean_b, cov_b = (t.double() for t in (mean_a, cov_a, mean_b, cov_b))
    values, vectors = torch.linalg.eigh(cov_a)
    sqrt_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    middle = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mean_a - mean_b).square().sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * trace_sqrt
    return float(distance.clamp(min=0))


def _knn_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each sample to its k-th nearest neighbour in the same set (itself excluded)."""
    distances = torch.cdist(features, features)
    return distances.kthvalue(k + 1, dim=1).values


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    real, fake = real.double(), fake.double()
    real_radii, fake_radii = _knn_radii(real, k), _knn_radii(fake, k)
    cross = torch.cdist(fake, real)  # (fake, real)
    precision = (cross <= real_radii[None, :]).any(dim=1).double().mean()
    recall = (cross.T <= fake_radii[None, :]).any(dim=1).double().mean()
    return float(precision), float(recall)


def kernel_inception_distance(real: torch.Tensor, fake: torch.Tensor, subsets: int = 10, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3 over random equal-size subsets: (mean, std over subsets)."""
    real, fake = real.double(), fake.double()
    size = min(subset_size, len(real), len(fake))
    generator = torch.Generator().manual_seed(seed)
    dim = real.shape[1]
    estimates = []
    for _ in range(subsets):
        x = real[torch.randperm(len(real), generator=generator)[:size]]
        y = fake[torch.randperm(len(fake), generator=generator)[:size]]
        k_xx, k_yy, k_xy = ((a @ b.T / dim + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        off_diagonal = size * (size - 1)
        estimates.append((k_xx.sum() - k_xx.diagonal().sum()) / off_diagonal
                         + (k_yy.sum() - k_yy.diagonal().sum()) / off_diagonal - 2 * k_xy.mean())
    values = torch.stack(estimates)
    return float(values.mean()), float(values.std()) if subsets > 1 else 0.0


def memorised_share(train: torch.Tensor, candidates: torch.Tensor, train_radius: torch.Tensor | None = None) -> float:
    """Share of candidates nearer to their nearest training image t than t is to its nearest other training image.
    `train_radius` (each training image's distance to its nearest other, `_knn_radii(train, 1)`) may be passed in:
    for 10,000 training images it takes seconds, and it is the same for every set of candidates."""
    train, candidates = train.double(), candidates.double()
    train_radius = _knn_radii(train, 1) if train_radius is None else train_radius
    nearest = torch.cdist(candidates, train).min(dim=1)
    return float((nearest.values < train_radius[nearest.indices]).double().mean())


def quality_of_features(reference: QualityReference, fake_features: torch.Tensor) -> dict[str, float]:
    mean, cov = feature_statistics(fake_features)
    fid = frechet_distance(reference.real_mean, reference.real_cov, mean, cov)
    real = reference.real_features[: len(fake_features)]
    precision, recall = precision_recall(real, fake_features[: len(real)])
    kid, kid_std = kernel_inception_distance(reference.real_features, fake_features)
    return {"quality/fid_domain": fid, "quality/kid": kid, "quality/kid_std": kid_std, "quality/precision": precision,
            "quality/recall": recall}


# The floor is averaged over this many random holdout samples: one sample's floor varies (MNIST, 1,000 images:
# fid_domain 1.76 +- 0.32 over ten samples), and a ratio to a noisy floor would be noisier still. A generator's
# measurement averages as many samples of its images, for the same reason: one generator scored over eight samples of
# 1,000 gave fid_domain 3.15 +- 0.43 and recall 0.83 +- 0.017 (docs/quality.md#measurement-noise), and a run keeps the
# lowest of its measurements, so single samples favoured lucky draws.
FLOOR_DRAWS = 5
MAX_MEASURED_IMAGES = 50_000  # above this, fewer samples per measurement (memory: the images are generated at once)


def measurement_draws(samples: int) -> int:
    """How many samples of `samples` generated images one measurement averages."""
    return max(1, min(FLOOR_DRAWS, MAX_MEASURED_IMAGES // samples))


def floor(reference: QualityReference, samples: int, seed: int = 0) -> dict[str, float]:
    """The metrics of `samples` held-out real images (fewer if the holdout is smaller: `quality/floor_samples` says
    how many), named `<metric>_floor`: what a perfect generator would score at this sample count.

    The images are seeded random samples of the holdout with each class's share kept, never the first ones in
    manifest order (MNIST's test set is not in random order: its first 1,000 images scored 8.8 against 1.4 to 2.4
    for random ones; a holdout written class by class scored 598). The metrics are averaged over FLOOR_DRAWS samples."""
    labels = reference.holdout_labels.numpy()
    train_radius = _knn_radii(reference.real_features.double(), 1)
    draws = []
    for draw in range(FLOOR_DRAWS if samples < len(labels) else 1):
        chosen = stratified_choice(labels, samples, np.random.default_rng([seed, draw]))
        real = reference.holdout_features[torch.from_numpy(chosen)]
        metrics = {name: value for name, value in quality_of_features(reference, real).items()
                   if not name.endswith("_std")}
        draws.append({**metrics, "quality/memorised_share": memorised_share(reference.real_features, real,
                                                                            train_radius)})
    return {**{f"{name}_floor": float(np.mean([d[name] for d in draws])) for name in draws[0]},
            "quality/floor_samples": float(min(samples, len(labels)))}


def quality_of_images(reference: QualityReference, images: torch.Tensor) -> dict[str, float]:
    """Metrics for a batch of images in [-1, 1] (real or generated)."""
    return quality_of_features(reference, reference.classifier().features(images.float().cpu()))


@torch.no_grad()
def generate(generator: torch.nn.Module, latent_dim: int, samples: int, seed: int = 0,
             classes: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """`samples` images from fixed-seed noise (or the `noise` given) in eval mode (BatchNorm running statistics), so
    snapshots compare like with like; a conditional generator draws `classes`."""
    device = next(generator.parameters()).device
    if noise is None:
        noise = torch.randn(samples, latent_dim, generator=torch.Generator().manual_seed(seed))
    noise = noise.to(device)
    given = itertools.repeat(()) if classes is None else [(chunk.to(device),) for chunk in classes.split(500)]
    was_training = generator.training
    exported = isinstance(generator, torch.fx.GraphModule)  # a loaded logged model: its mode was fixed at export
    if not exported:
        generator.eval()
    try:
        return torch.cat([generator(chunk, *extra) for chunk, extra in zip(noise.split(500), given)])
    finally:
        if not exported:
            generator.train(was_training)


def measured_noise(reference: QualityReference, latent_dim: int, samples: int, seed: int = 0,
                   conditional: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The z (and for a conditional generator the classes) of one measurement: measurement_draws(samples) samples
    of `samples` in a row, seeded; the first is what a single-sample measurement drew."""
    draws = measurement_draws(samples)
    noise = torch.randn(samples * draws, latent_dim, generator=torch.Generator().manual_seed(seed))
    classes = (torch.cat([conditioning_classes(reference, samples, seed + draw) for draw in range(draws)])
               if conditional else None)
    return noise, classes


def quality_of_draws(reference: QualityReference, features: torch.Tensor, samples: int) -> dict[str, float]:
    """quality_of_features averaged over consecutive samples of `samples` generated images' features."""
    draws = [quality_of_features(reference, chunk) for chunk in features.split(samples)]
    return {name: float(np.mean([draw[name] for draw in draws])) for name in draws[0]}


def conditioning_classes(reference: QualityReference, samples: int, seed: int = 0) -> torch.Tensor:
    """Classes for a conditional generator's `samples`, in the holdout's class shares (what its metrics compare
    against), seeded."""
    labels = reference.holdout_labels.numpy()
    rng = np.random.default_rng([seed, 1])
    chosen = (stratified_choice(labels, samples, rng) if samples <= len(labels)
              else rng.choice(len(labels), size=samples))
    return reference.holdout_labels[torch.from_numpy(chosen)]


def evaluate_generator(generator: torch.nn.Module, reference: QualityReference, latent_dim: int, samples: int,
                       seed: int = 0, memorisation: bool = False, conditional: bool = False) -> dict[str, float]:
    """Metrics of `samples` generated images, averaged over measurement_draws(samples) such samples as the floor
    is, plus the seconds they took as `quality/seconds` (and, with `memorisation`, `quality/memorised_share`). A
    conditional generator draws the holdout's class mix and is also scored by `quality/class_match`: the share of its
    images the domain classifier assigns to the class asked for (its floor, `quality/class_match_floor`, is the
    classifier's accuracy on real held-out images)."""
    start = time.perf_counter()
    noise, classes = measured_noise(reference, latent_dim, samples, seed, conditional)
    images = generate(generator, latent_dim, len(noise), classes=classes, noise=noise).float().cpu()
    classifier = reference.classifier()
    features = classifier.features(images)
    metrics = quality_of_draws(reference, features, samples)
    if classes is not None:  # the classifier's head on the features just computed
        with torch.no_grad():
            predicted = classifier.head(features.float()).argmax(1)
        metrics["quality/class_match"] = float((predicted == classes).float().mean())
    if memorisation:
        metrics["quality/memorised_share"] = memorised_share(reference.real_features, features)
    metrics["quality/seconds"] = time.perf_counter() - start
    return metrics
