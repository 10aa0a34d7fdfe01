"""The DCGAN generator and discriminator of Radford et al. 2015, sized by resolution and width.

Pure torch: no Ray, no data, no tracking. The discriminator returns logits (no Sigmoid) so the losses can
use BCE-with-logits, which is numerically safe where sigmoid+BCE saturates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelShape:
    """What both networks need to know about the images and the noise."""

    resolution: int
    channels: int
    latent_dim: int
    g_features: int = 64
    d_features: int = 64

    @property
    def stages(self) -> int:
        """Number of 2x up/down-sampling stages between 4x4 and the image (3 for 32px, 4 for 64px)."""
        stages = int(math.log2(self.resolution)) - 2
        if self.resolution != 4 * 2**stages or stages < 1:
            raise ValueError(f"resolution must be a power of two >= 8, got {self.resolution}")
        return stages


class Generator(nn.Module):
    """z (N, latent_dim) -> images (N, C, R, R) in [-1, 1]: transposed convs, BatchNorm + ReLU, Tanh out."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        self.shape = shape
        width = shape.g_features * 2 ** (shape.stages - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(shape.latent_dim, width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        for _ in range(shape.stages - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, shape.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1))


class Discriminator(nn.Module):
    """images (N, C, R, R) -> logits (N,): strided convs, LeakyReLU(0.2), BatchNorm except on the input layer."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        self.shape = shape
        width = shape.d_features
        layers: list[nn.Module] = [nn.Conv2d(shape.channels, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for _ in range(shape.stages - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2), nn.LeakyReLU(0.2, True)]
            width *= 2
        layers += [nn.Conv2d(width, 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).flatten()


def init_weights(module: nn.Module) -> None:
    """Conv weights ~ N(0, 0.02); BatchNorm scale ~ N(1, 0.02), shift 0 (DCGAN paper, section 4)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_models(shape: ModelShape) -> tuple[Generator, Discriminator]:
    generator, discriminator = Generator(shape), Discriminator(shape)
    generator.apply(init_weights)
    discriminator.apply(init_weights)
    return generator, discriminator
