"""TrainState: both networks, both optimisers, the generator's EMA, the counters and the fixed noise — everything a
resume needs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gan.training.ema import GeneratorEMA
from gan.training.losses import Objective
from gan.training.models import ModelShape, build_models


def unwrap(module: nn.Module) -> nn.Module:
    """The bare network under torch.compile and DistributedDataParallel wrappers (checkpoints must not depend on
    the wrappers)."""
    module = getattr(module, "_orig_mod", module)
    return getattr(module, "module", module)


@dataclass
class TrainState:
    generator: nn.Module
    discriminator: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    fixed_noise: torch.Tensor
    ema: GeneratorEMA | None = None
    augment: tuple[str, ...] = ()  # DiffAugment policy (gan/training/augment.py); () = off
    objective: Objective = Objective()  # the loss and R1 (gan/training/losses.py)
    images_per_step: int = 0  # the global batch, for the EMA's half-life in images (0 = this rank's batch)
    # This rank's share of the global batch times the world size: DDP averages gradients over ranks equally, so a
    # rank holding more of the batch than the others (an elastic run on fewer ranks) scales its losses by this to
    # make the average the global batch's mean. 1 when every rank holds the same share.
    loss_weight: float = 1.0
    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps completed, counted once per global batch

    @classmethod
    def create(cls, shape: ModelShape, lr: float, beta1: float, seed: int, sample_count: int = 64,
               lr_d: float = 0.0, ema_half_life_kimg: float = 0.0, ema_rampup: float = 0.0,
               augment: tuple[str, ...] = (), images_per_step: int = 0,
               objective: Objective = Objective()) -> "TrainState":
        torch.manual_seed(seed)  # same weights on every rank before DDP broadcasts them anyway
        generator, discriminator = build_models(shape)
        betas = (beta1, 0.999)
        return cls(
            generator=generator,
            discriminator=discriminator,
            opt_g=torch.optim.Adam(generator.parameters(), lr=lr, betas=betas),
            opt_d=torch.optim.Adam(discriminator.parameters(), lr=lr_d or lr, betas=betas),
            fixed_noise=torch.randn(sample_count, shape.latent_dim, generator=torch.Generator().manual_seed(seed + 1)),
            ema=GeneratorEMA(generator, ema_half_life_kimg, ema_rampup) if ema_half_life_kimg else None,
            augment=augment,
            objective=objective,
            images_per_step=images_per_step,
        )

    @property
    def sampler(self) -> nn.Module:
        """The generator that samples, is measured and is saved: the EMA one when it is on."""
        return self.ema.sampler() if self.ema is not None else unwrap(self.generator)

    def state_dict(self) -> dict[str, Any]:
        """Tensors, plain numbers and dicts only, so it loads with torch.load(weights_only=True)."""
        return {
            "generator": unwrap(self.generator).state_dict(),
            "discriminator": unwrap(self.discriminator).state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "fixed_noise": self.fixed_noise,
            "epoch": self.epoch,
            "step": self.step,
            # Through the sampler: BatchNorm statistics measured for the averaged weights, so a generator loaded
            # from the checkpoint samples as the run's own did.
            **({"generator_ema": self.ema.sampler().state_dict()} if self.ema is not None else {}),
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        unwrap(self.generator).load_state_dict(saved["generator"])
        unwrap(self.discriminator).load_state_dict(saved["discriminator"])
        self.opt_g.load_state_dict(saved["opt_g"])
        self.opt_d.load_state_dict(saved["opt_d"])
        self.fixed_noise = saved["fixed_noise"]
        self.epoch = int(saved["epoch"])
        self.step = int(saved["step"])
        if self.ema is not None:
            # A checkpoint from before the EMA was turned on starts the average at today's weights.
            self.ema.model.load_state_dict(saved.get("generator_ema", unwrap(self.generator).state_dict()))
            self.ema.stale = True

    def set_lr(self, lr: float, lr_d: float = 0.0) -> None:
        """Apply the learning rates after a restore (a restored optimiser state carries the old ones)."""
        for optimiser, rate in ((self.opt_g, lr), (self.opt_d, lr_d or lr)):
            for group in optimiser.param_groups:
                group["lr"] = rate
