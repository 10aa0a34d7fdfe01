"""DiffAugment: differentiable, per-image parameters applied exactly as drawn, and used before every D call."""
import pytest
import torch

from gan.config import ConfigError
from gan.training.augment import apply, cutout_mask, diffaugment, parse_policy, sample_params, translate
from gan.training.models import ModelShape
from gan.training.state import TrainState
from gan.training.step import train_step


def test_translation_moves_each_image_by_its_own_shift():
    images = torch.zeros(3, 1, 8, 8)
    images[:, :, 4, 4] = 1.0
    shift = torch.tensor([[1, 0], [0, -1], [-1, 1]])
    moved = translate(images, shift)
    for i, (down, right) in enumerate(shift.tolist()):
        assert moved[i, 0].nonzero().tolist() == [[4 + down, 4 + right]]


def test_cutout_zeroes_a_square_of_the_drawn_size_around_each_centre():
    mask = cutout_mask(torch.ones(2, 1, 8, 8), torch.tensor([[4, 4], [0, 7]]), size=4)
    assert mask[0, 0, 2:6, 2:6].sum() == 0 and mask[0].sum() == 64 - 16
    assert mask[1, 0, 0:2, 5:8].sum() == 0 and mask[1].sum() == 64 - 6  # clipped at the corner


def test_parameters_are_drawn_per_image_and_afresh_at_every_call():
    images = torch.zeros(64, 1, 32, 32)
    first, second = sample_params(images, ("translation", "cutout")), sample_params(images, ("translation", "cutout"))
    assert len({tuple(s) for s in first["shift"].tolist()}) > 10  # not one shift for the whole batch
    assert not torch.equal(first["cutout_centre"], second["cutout_centre"])  # real and fake get their own draws


def test_it_is_differentiable_and_cut_pixels_get_no_gradient():
    images = torch.randn(4, 3, 16, 16, requires_grad=True)
    params = sample_params(images, ("color", "translation", "cutout"))
    apply(images, params).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert torch.isfinite(images.grad).all()


def test_colour_changes_rgb_images_and_auto_adds_it_only_for_rgb():
    assert parse_policy("auto", channels=1) == ("translation", "cutout")
    assert parse_policy("auto", channels=3) == ("translation", "cutout", "color")
    assert parse_policy("", channels=3) == ()
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    assert not torch.allclose(diffaugment(images, ("color",)), images)


@pytest.mark.parametrize("policy", ["rotate", "translation,translation"])
def test_unknown_or_repeated_transforms_are_rejected(policy):
    with pytest.raises(ConfigError, match="--diffaugment"):
        parse_policy(policy)


def test_every_discriminator_call_of_a_step_sees_augmented_images():
    state = TrainState.create(ModelShape(32, 1, 8, 4, 4), 2e-4, 0.5, seed=0, augment=("cutout",))
    seen = []
    state.discriminator.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    real = torch.full((8, 1, 32, 32), 0.7)
    train_step(state, real)
    assert len(seen) == 3  # D on real, on fake in the D step, on fake in the G step
    for images in seen:  # cutout leaves a 16x16 block of exact zeros in every image (real pixels are 0.7)
        assert ((images == 0).flatten(1).sum(1) >= 8 * 8).all()
