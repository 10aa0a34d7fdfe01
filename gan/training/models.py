"""The DCGAN generator and discriminator of Radford et al. 2015, sized by resolution and width; class-conditional
when the shape has classes: G reads a learned class embedding beside z, D adds a projection term (Miyato & Koyama
2018, "cGANs with Projection Discriminator": the inner product of a class embedding with D's pooled features).

Pure torch: no Ray, no data, no tracking. The discriminator returns logits (no Sigmoid) so the losses can
use BCE-with-logits, which is numerically safe where sigmoid+BCE saturates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

# batch: BatchNorm after every conv of D but the first (DCGAN). spectral: no BatchNorm; every conv's weight divided by
# its largest singular value (Miyato et al. 2018), which bounds D's Lipschitz constant instead.
D_NORMS = ("batch", "spectral")


@dataclass(frozen=True)
class ModelShape:
    """What both networks need to know about the images and the noise."""

    resolution: int
    channels: int
    latent_dim: int
    g_features: int = 64
    d_features: int = 64
    num_classes: int = 0  # > 0: class-conditional networks
    d_norm: str = "batch"  # D's normalisation: batch (DCGAN) or spectral (D_NORMS)

    @property
    def class_embedding(self) -> int:
        """Width of G's class embedding: one per class, at most half of z. On MNIST at the default length an
        embedding as wide as z (100) outweighed it and each class collapsed to one image (fid_domain 185, recall
        0.00), while 10 gave 11.6 and 0.62 (docs/quality.md#class-conditional)."""
        return min(self.num_classes, self.latent_dim // 2) if self.num_classes else 0

    @property
    def generator_inputs(self) -> int:
        """Channels G's first layer reads: z, then the class embedding when conditional."""
        return self.latent_dim + self.class_embedding

    @property
    def stages(self) -> int:
        """Number of 2x up/down-sampling stages between 4x4 and the image (3 for 32px, 4 for 64px)."""
        stages = int(math.log2(self.resolution)) - 2
        if self.resolution != 4 * 2**stages or stages < 1:
            raise ValueError(f"resolution must be a power of two >= 8, got {self.resolution}")
        return stages


class Generator(nn.Module):
    """z (N, latent_dim) [and classes (N,)] -> images (N, C, R, R) in [-1, 1]: transposed convs, BatchNorm + ReLU,
    Tanh out."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        self.shape = shape
        # N(0, 1) like z: per channel the class is as loud as the noise, and z has the most channels.
        self.embed = nn.Embedding(shape.num_classes, shape.class_embedding) if shape.num_classes else None
        width = shape.g_features * 2 ** (shape.stages - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(shape.generator_inputs, width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        for _ in range(shape.stages - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, shape.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z.view(z.shape[0], -1), self.embed(classes).to(z.dtype)], 1)
        return self.net(z.view(z.shape[0], -1, 1, 1))


class Discriminator(nn.Module):
    """images (N, C, R, R) [and classes (N,)] -> logits (N,): strided convs, LeakyReLU(0.2), BatchNorm except on the
    input layer (or spectral norm on every conv, shape.d_norm); conditional: plus the projection <embed(class), sum
    of the last features over space>."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        if shape.d_norm not in D_NORMS:
            raise ValueError(f"d_norm must be one of {', '.join(D_NORMS)}, got {shape.d_norm!r}")
        self.shape = shape
        spectral = shape.d_norm == "spectral"

        def conv(inputs: int, outputs: int, stride: int, padding: int) -> nn.Module:
            layer = nn.Conv2d(inputs, outputs, 4, stride, padding, bias=False)
            if spectral:  # initialised first: init_weights cannot reach a weight behind a parametrization
                init_weights(layer)
                layer = spectral_norm(layer)
            return layer

        width = shape.d_features
        layers: list[nn.Module] = [conv(shape.channels, width, 2, 1), nn.LeakyReLU(0.2, True)]
        for _ in range(shape.stages - 1):
            norm = [] if spectral else [nn.BatchNorm2d(width * 2)]
            layers += [conv(width, width * 2, 2, 1), *norm, nn.LeakyReLU(0.2, True)]
            width *= 2
        layers += [conv(width, 1, 1, 0)]
        self.net = nn.Sequential(*layers)
        self.embed = nn.Embedding(shape.num_classes, width) if shape.num_classes else None
        if self.embed is not None:  # small, as DCGAN initialises the convs, so the term starts near zero
            nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, images: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is None:
            return self.net(images).flatten()
        features = self.net[:-1](images)
        projection = (self.embed(classes).to(features.dtype) * features.sum((2, 3))).sum(1)
        return self.net[-1](features).flatten() + projection


class PackedClassInput(nn.Module):
    """A conditional generator behind one input tensor, (N, latent_dim + 1): z, then the class index as a float.
    MLflow's PyTorch flavour serves and predicts one tensor, so this is the form a logged model takes."""

    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator

    @staticmethod
    def pack(z: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """The one tensor forward() reads: z with each image's class appended as a float column."""
        return torch.cat([z, classes.to(z.dtype).view(-1, 1)], 1)

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        return self.generator(packed[:, :-1], packed[:, -1].round().long())


def init_weights(module: nn.Module) -> None:
    """Conv weights ~ N(0, 0.02); BatchNorm scale ~ N(1, 0.02), shift 0 (DCGAN paper, section 4). Spectrally
    normalised convs are initialised before their parametrization is added (Discriminator)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and not parametrize.is_parametrized(module):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_models(shape: ModelShape) -> tuple[Generator, Discriminator]:
    generator, discriminator = Generator(shape), Discriminator(shape)
    generator.apply(init_weights)
    discriminator.apply(init_weights)
    return generator, discriminator
