"""One DCGAN training step on one batch: a discriminator update, then a generator update. Pure torch.

Returns its statistics as one detached tensor (no .item()), so a step never waits on a host sync;
`gan/training/stats.py` reduces them once per log window.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from gan.training.augment import diffaugment
from gan.training.losses import Objective, fake_loss, generator_loss, mode_seeking_term, r1_penalty, real_loss
from gan.training.state import TrainState, unwrap

STEP_STATS = ("loss/D", "loss/D_real", "loss/D_fake", "loss/G", "disc/D_x", "disc/D_G_z")


def step_stats(objective: Objective) -> tuple[str, ...]:
    """What train_step returns under this objective: with R1 on, also loss/R1, the penalty as added to D's loss
    (0 on the steps between two lazy ones); with mode seeking on, loss/mode_seeking, the term in G's loss."""
    return (STEP_STATS + (("loss/R1",) if objective.r1_gamma else ())
            + (("loss/mode_seeking",) if objective.mode_seeking else ()))


def _local_only(module: nn.Module):
    """DDP's no_sync: accumulate this backward's gradients locally; the next synced backward all-reduces them."""
    return module.no_sync() if hasattr(module, "no_sync") else contextlib.nullcontext()


def train_step(state: TrainState, real: torch.Tensor, bf16: bool = False,
               classes: torch.Tensor | None = None) -> torch.Tensor:
    """Update D on real and G(z), then G through D; return the values named by step_stats(state.objective). With
    `classes` (the real images' labels; conditional networks) G draws the same classes, so fakes follow the data's
    class mix; with mode seeking on, the first half's classes twice, so each pair (i, half + i) shares one.

    With bf16 the forward passes run under autocast; the losses are taken in float32 (BCE on bf16 logits would
    round D(x) near 0 and 1, exactly where the GAN's gradients live)."""
    with torch.autocast(real.device.type, dtype=torch.bfloat16, enabled=bf16):
        return _step(state, real, classes)


def _step(state: TrainState, real: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
    generator, discriminator, policy, objective = state.generator, state.discriminator, state.augment, state.objective
    noise = torch.randn(real.shape[0], state.fixed_noise.shape[1], device=real.device)
    given = () if classes is None else (classes,)  # the real images' classes
    drawn = given  # the fakes' classes
    if classes is not None and objective.mode_seeking:  # the mode-seeking pairs (i, half + i) share a class
        half = real.shape[0] // 2
        drawn = (torch.cat([classes[:half], classes[:real.shape[0] - half]]),)
    fake = generator(noise, *drawn)

    # Real and fake go through D as separate batches (BatchNorm statistics must not mix them, DCGAN sec. 4);
    # the first backward stays local so D's gradients are all-reduced once, not twice.
    state.opt_d.zero_grad(set_to_none=True)
    with _local_only(discriminator):
        shown = diffaugment(real, policy)
        regularise = objective.r1_due(state.step)
        shown = shown.detach().requires_grad_(True) if regularise else shown
        real_logits = discriminator(shown, *given)
        loss_real = real_loss(real_logits, objective.loss)
        penalty = r1_penalty(real_logits, shown, objective) if regularise else torch.zeros((), device=real.device)
        (loss_real + penalty).mul(state.loss_weight).backward()
    fake_logits = discriminator(diffaugment(fake.detach(), policy), *drawn)
    loss_fake = fake_loss(fake_logits, objective.loss)
    loss_fake.mul(state.loss_weight).backward()
    state.opt_d.step()

    # D's gradients from the generator step are thrown away, so they need no all-reduce either.
    state.opt_g.zero_grad(set_to_none=True)
    with _local_only(discriminator):
        loss_g = generator_loss(discriminator(diffaugment(fake, policy), *drawn), objective.loss)
        seeking = (mode_seeking_term(fake, noise, objective.mode_seeking) if objective.mode_seeking
                   else torch.zeros((), device=real.device))
        (loss_g + seeking).mul(state.loss_weight).backward()
    state.opt_g.step()
    state.step += 1
    if state.ema is not None:
        batch_images = state.images_per_step or real.shape[0]
        state.ema.update(unwrap(generator), state.step * batch_images, batch_images)

    with torch.no_grad():
        return torch.stack([
            loss_real + loss_fake,
            loss_real,
            loss_fake,
            loss_g,
            torch.sigmoid(real_logits.float()).mean(),
            torch.sigmoid(fake_logits.float()).mean(),
            *((penalty.float(),) if objective.r1_gamma else ()),
            *((seeking.float(),) if objective.mode_seeking else ()),
        ]).detach()
