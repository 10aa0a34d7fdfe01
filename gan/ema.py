"""An exponential moving average of the generator's weights (as StyleGAN2-ADA's G_ema): the averaged generator is
smoother than the raw one, which oscillates with the discriminator, and it costs no training compute. Pure torch.

The decay is set by a half-life counted in images, so it means the same at any batch size and world size; early in
training (`rampup`) the half-life is at most that share of the images seen, so the average does not drag the
random initial weights along.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class GeneratorEMA:
    def __init__(self, generator: nn.Module, half_life_kimg: float, rampup: float):
        self.model = copy.deepcopy(generator).eval().requires_grad_(False)
        self.half_life_images = half_life_kimg * 1000
        self.rampup = rampup

    def beta(self, images_seen: int, batch_images: int) -> float:
        """The weight kept from the average after one step of `batch_images` images."""
        half_life = self.half_life_images
        if self.rampup:
            half_life = min(half_life, images_seen * self.rampup)
        return 0.5 ** (batch_images / max(half_life, 1e-8))

    @torch.no_grad()
    def update(self, generator: nn.Module, images_seen: int, batch_images: int) -> None:
        """average <- beta * average + (1 - beta) * weights; buffers (BatchNorm statistics) are copied, as in
        StyleGAN2-ADA, so eval-mode sampling uses the live generator's running statistics."""
        beta = self.beta(images_seen, batch_images)
        for average, live in zip(self.model.parameters(), generator.parameters()):
            average.lerp_(live.detach().to(average.dtype), 1.0 - beta)
        for average, live in zip(self.model.buffers(), generator.buffers()):
            average.copy_(live)
