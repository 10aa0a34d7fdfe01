"""What the quality network learns, so that its features can measure generated images: the training task of each
feature space, its loss and its score on the holdout.

- classifier: predict the class (a labelled set). The MNIST-GAN papers' LeNet, in place of Inception.
- rotation: predict which of four quarter turns an image was given (Gidaris et al. 2018): needs no labels.
- contrastive: tell an image's two augmented views apart from every other image's in the batch (SimCLR, Chen et al.
  2020), with DiffAugment's transforms as the views: needs no labels.
Morozov et al. (ICLR 2021) found self-supervised features rank GANs well; docs/quality.md measures how each
label-free space ranks one run's generators against the classifier's.
"""
from __future__ import annotations

import torch
from torch import nn

from gan.training.augment import diffaugment, parse_policy

CLASSIFIER, ROTATION, CONTRASTIVE = "classifier", "rotation", "contrastive"
SPACES = (CLASSIFIER, ROTATION, CONTRASTIVE)
ROTATIONS = 4
PROJECTION_DIM = 32  # the contrastive head: features are taken before it, as SimCLR does
TEMPERATURE = 0.2


def head_size(space: str, num_classes: int) -> int:
    return {CLASSIFIER: num_classes, ROTATION: ROTATIONS, CONTRASTIVE: PROJECTION_DIM}[space]


def rotated(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Each image turned by its own number of quarter turns (0 to 3)."""
    out = images.clone()
    for k in range(1, ROTATIONS):
        chosen = turns == k
        if chosen.any():
            out[chosen] = torch.rot90(images[chosen], k, dims=(2, 3))
    return out


def _views(images: torch.Tensor) -> torch.Tensor:
    """Two augmented views of every image, stacked: [view a of all; view b of all]."""
    policy = parse_policy("auto", images.shape[1])
    return torch.cat([diffaugment(images, policy), diffaugment(images, policy)])


def _view_logits(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities of every view to every other (not itself), over the temperature, and each view's
    partner: the NT-Xent problem of one batch."""
    projected = nn.functional.normalize(model(_views(images)), dim=1)
    logits = projected @ projected.T / TEMPERATURE
    logits.fill_diagonal_(float("-inf"))
    count = len(images)
    partners = torch.cat([torch.arange(count, 2 * count), torch.arange(count)])
    return logits, partners


def task_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, space: str) -> torch.Tensor:
    if space == CLASSIFIER:
        return nn.functional.cross_entropy(model(images), labels)
    if space == ROTATION:
        turns = torch.randint(0, ROTATIONS, (len(images),))
        return nn.functional.cross_entropy(model(rotated(images, turns)), turns)
    return nn.functional.cross_entropy(*_view_logits(model, images))


@torch.no_grad()
def holdout_score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, space: str, seed: int) -> float:
    """The task's accuracy on held-out images: the class, the quarter turn, or (contrastive) the share of views whose
    nearest other view among 500 images' is their partner. Seeded, so a rebuilt reference scores the same."""
    model.eval()
    torch.manual_seed(seed)
    if space == CLASSIFIER:
        return (model(images).argmax(1) == labels).double().mean().item()
    if space == ROTATION:
        turns = torch.randint(0, ROTATIONS, (len(images),))
        return (model(rotated(images, turns)).argmax(1) == turns).double().mean().item()
    hits = [(logits.argmax(1) == partners).double() for logits, partners in
            (_view_logits(model, chunk) for chunk in images.split(500))]
    return torch.cat(hits).mean().item()
