"""An exponential moving average of the generator's weights (as StyleGAN2-ADA's G_ema): the averaged generator is
smoother than the raw one, which oscillates with the discriminator, and it costs no training compute. Pure torch.

The decay is set by a half-life counted in images, so it means the same at any batch size and world size; early in
training (`rampup`) the half-life is at most that share of the images seen, so the average does not drag the
random initial weights along.

DCGAN's generator has BatchNorm, which StyleGAN's has not: averaged weights run with the live generator's running
statistics produce activations those statistics were not measured on (measured: the EMA generator then scored worse
than the raw one in 3 of 4 runs). So, as SWA does (Izmailov et al. 2018), the statistics are measured again for the
averaged weights, with torch's own `update_bn`, before the EMA generator is sampled, measured or saved.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from gan.training.models import PackedClassInput

# 256 fixed latent vectors, in two batches (one per rank on two ranks), measure the BatchNorm statistics once per
# report. Measured on a default MNIST run's final EMA generator, fid_domain at 1,000 samples over 3 statistics draws
# x 2 sample seeds: 44.85 +- 0.68 from 256 vectors, 44.92 +- 0.61 from 512, 44.83 +- 0.63 from 2,048: the same within
# the sampling noise, at an eighth of the cost (1.19 s -> 0.13 s at 64x64x3 on 2 cores; 0.23 s -> 0.03 s at
# 32x32x1), which had been the largest cost of a report (bench/ema_statistics.py).
STATISTICS_BATCHES, STATISTICS_BATCH = 2, 128


class GeneratorEMA:
    def __init__(self, generator: nn.Module, half_life_kimg: float, rampup: float):
        self.model = copy.deepcopy(generator).eval().requires_grad_(False)
        self.half_life_images = half_life_kimg * 1000
        self.rampup = rampup
        self.stale = True  # the BatchNorm statistics do not yet belong to the averaged weights

    def beta(self, images_seen: int, batch_images: int) -> float:
        """The weight kept from the average after one step of `batch_images` images."""
        half_life = self.half_life_images
        if self.rampup:
            half_life = min(half_life, images_seen * self.rampup)
        return 0.5 ** (batch_images / max(half_life, 1e-8))

    @torch.no_grad()
    def update(self, generator: nn.Module, images_seen: int, batch_images: int) -> None:
        """average <- beta * average + (1 - beta) * weights."""
        beta = self.beta(images_seen, batch_images)
        for average, live in zip(self.model.parameters(), generator.parameters()):
            average.lerp_(live.detach().to(average.dtype), 1.0 - beta)
        self.stale = True

    def sampler(self) -> nn.Module:
        """The averaged generator in eval mode, with BatchNorm statistics measured for its own weights on fixed
        noise (once per change of the weights: about once per report)."""
        if self.stale:
            self.measure_statistics()
        return self.model

    @torch.no_grad()
    def measure_statistics(self, rank: int = 0, world_size: int = 1) -> None:
        """Measure the averaged weights' BatchNorm statistics on the fixed latent batches. Given ranks, each rank
        runs its share of the batches and the statistics are averaged across ranks (a collective: every rank calls
        it): the same numbers one process gets running them all, since update_bn (momentum None) averages per-batch
        statistics, in a fraction of the time, on ranks that would otherwise wait for rank 0's report."""
        device = next(self.model.parameters()).device
        noise = torch.randn(STATISTICS_BATCHES * STATISTICS_BATCH, self.model.shape.latent_dim,
                            generator=torch.Generator().manual_seed(0)).to(device)
        model, classes = self.model, self.model.shape.num_classes
        if classes:  # every class equally often, through the one-tensor form update_bn can feed
            noise = PackedClassInput.pack(noise, torch.arange(len(noise), device=device) % classes)
            model = PackedClassInput(self.model)
        batches = noise.split(STATISTICS_BATCH)
        mine = batches[rank::world_size]
        update_bn(mine, model)
        if world_size > 1:
            _average_statistics(self.model, len(mine), len(batches))
        self.model.eval()
        self.stale = False


def _average_statistics(model: nn.Module, own_batches: int, all_batches: int) -> None:
    """Each BatchNorm's running mean and variance, weighted by the batches each rank measured, summed over ranks."""
    import torch.distributed as dist

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    flat = torch.cat([t.flatten() for m in norms for t in (m.running_mean, m.running_var)]) * own_batches
    dist.all_reduce(flat)
    flat /= all_batches
    offset = 0
    for norm in norms:
        for buffer in (norm.running_mean, norm.running_var):
            buffer.copy_(flat[offset:offset + buffer.numel()].view_as(buffer))
            offset += buffer.numel()
        norm.num_batches_tracked.fill_(all_batches)
