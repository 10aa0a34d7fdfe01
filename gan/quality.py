"""Image-quality metrics in the domain classifier's feature space (see gan/classifier.py for why not Inception):

- Fréchet distance between real and generated feature Gaussians (Heusel et al. 2017), as `quality/fid_domain`;
- improved precision and recall with k-NN manifolds (Kynkäänniemi et al. 2019), as `quality/precision` and
  `quality/recall`: precision = share of generated samples inside the real manifold (fidelity), recall = share of
  real samples inside the generated manifold (coverage; near 0 under mode collapse).
"""
from __future__ import annotations

import time

import torch

from gan.classifier import QualityReference, feature_statistics


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


def quality_of_features(reference: QualityReference, fake_features: torch.Tensor) -> dict[str, float]:
    mean, cov = feature_statistics(fake_features)
    fid = frechet_distance(reference.real_mean, reference.real_cov, mean, cov)
    real = reference.real_features[: len(fake_features)]
    precision, recall = precision_recall(real, fake_features[: len(real)])
    return {"quality/fid_domain": fid, "quality/precision": precision, "quality/recall": recall}


def quality_of_images(reference: QualityReference, images: torch.Tensor) -> dict[str, float]:
    """Metrics for a batch of images in [-1, 1] (real or generated)."""
    return quality_of_features(reference, reference.classifier().features(images.float().cpu()))


@torch.no_grad()
def evaluate_generator(generator: torch.nn.Module, reference: QualityReference, latent_dim: int, samples: int,
                       seed: int = 0) -> dict[str, float]:
    """Metrics for `samples` fresh images (eval-mode BatchNorm, fixed seed so snapshots compare like with like),
    plus the seconds they took as `quality/seconds`."""
    start = time.perf_counter()
    device = next(generator.parameters()).device
    noise = torch.randn(samples, latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    was_training = generator.training
    generator.eval()
    try:
        images = torch.cat([generator(chunk) for chunk in noise.split(500)])
    finally:
        generator.train(was_training)
    metrics = quality_of_images(reference, images)
    metrics["quality/seconds"] = time.perf_counter() - start
    return metrics
