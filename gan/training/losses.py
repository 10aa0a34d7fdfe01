"""The GAN objective on logits (BCE-with-logits is numerically safe where sigmoid + BCE saturates).

Discriminator loss = real_loss(D(x)) + fake_loss(D(G(z))), kept as two terms so both get logged.
Generator loss = real_loss(D(G(z))): the non-saturating -log D(G(z)) of Goodfellow et al. 2014, sec. 3.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def real_loss(logits: torch.Tensor) -> torch.Tensor:
    """BCE against the label 'real' (1), in float32 whatever the autocast dtype of the logits."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def fake_loss(logits: torch.Tensor) -> torch.Tensor:
    """BCE against the label 'fake' (0), in float32 whatever the autocast dtype of the logits."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating: G is trained to make D call its images real, rather than to minimise log(1 - D(G(z)))."""
    return real_loss(fake_logits)
