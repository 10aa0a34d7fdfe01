"""The GAN objective on logits: the loss (`bce`, DCGAN's, or `hinge`) and the optional lazy R1 penalty on D.

- bce: D's loss = BCE(D(x), real) + BCE(D(G(z)), fake); G's loss = BCE(D(G(z)), real), the non-saturating
  -log D(G(z)) of Goodfellow et al. 2014, sec. 3. BCE-with-logits is numerically safe where sigmoid + BCE saturates.
- hinge: D's loss = relu(1 - D(x)) + relu(1 + D(G(z))); G's loss = -D(G(z)) (Lim & Ye 2017; with spectral norm in D,
  Miyato et al. 2018).
- R1 (Mescheder et al. 2018): gamma/2 * E|grad_x D(x)|^2 on real images, which keeps D flat around the data. Lazy
  (Karras et al. 2020, StyleGAN2 sec. 4): computed every `r1_every` steps and scaled by it, which keeps its effect
  and cuts its cost (a double backward through D) by that factor.
- mode seeking (Mao et al. 2019, MSGAN, eq. 3): weight / (mean|G(z1) - G(z2)| / mean|z1 - z2| + eps) added to G's
  loss, over pairs of latent vectors with the same class. It grows when two vectors give near the same image, so it
  pushes G to use z: a conditional G without it covered less of each class than real digits do (recall 0.79).
D's loss is kept as two terms so both get logged; every loss is taken in float32 whatever the autocast dtype.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Objective:
    loss: str = "bce"
    r1_gamma: float = 0.0  # 0 = no R1 penalty
    r1_every: int = 16
    mode_seeking: float = 0.0  # 0 = no mode-seeking term

    def r1_due(self, step: int) -> bool:
        """Whether the step about to be taken (0-based count of steps done) carries the lazy R1 penalty."""
        return self.r1_gamma > 0 and step % self.r1_every == 0


def real_loss(logits: torch.Tensor, loss: str = "bce") -> torch.Tensor:
    """D's loss on real images."""
    logits = logits.float()
    if loss == "hinge":
        return F.relu(1.0 - logits).mean()
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def fake_loss(logits: torch.Tensor, loss: str = "bce") -> torch.Tensor:
    """D's loss on generated images."""
    logits = logits.float()
    if loss == "hinge":
        return F.relu(1.0 + logits).mean()
    return F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))


def generator_loss(fake_logits: torch.Tensor, loss: str = "bce") -> torch.Tensor:
    """G's loss: make D call its images real (non-saturating for bce; D's mean score for hinge)."""
    if loss == "hinge":
        return -fake_logits.float().mean()
    return real_loss(fake_logits)


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor, objective: Objective) -> torch.Tensor:
    """The lazy R1 term for one batch: `real_images` must require grad and `real_logits` come from them; the
    gradient keeps its graph, so the penalty trains D."""
    (gradient,) = torch.autograd.grad(real_logits.float().sum(), real_images, create_graph=True)
    return gradient.float().square().sum((1, 2, 3)).mean() * (objective.r1_gamma / 2 * objective.r1_every)


def mode_seeking_term(fake: torch.Tensor, noise: torch.Tensor, weight: float) -> torch.Tensor:
    """MSGAN's term over the batch's two halves, image i paired with image half + i (train_step gives each pair
    one class). Means over the whole halves, as the paper's code takes them; float32 whatever the autocast."""
    half = fake.shape[0] // 2
    images = (fake[:half].float() - fake[half:2 * half].float()).abs().mean()
    latents = (noise[:half].float() - noise[half:2 * half].float()).abs().mean()
    return weight / (images / latents + 1e-5)
