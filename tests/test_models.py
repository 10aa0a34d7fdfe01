"""DCGAN networks: shapes per resolution/channels, paper initialisation, a step that learns."""
import pytest
import torch

from gan.training.models import Discriminator, Generator, ModelShape, build_models
from gan.training.state import TrainState
from gan.training.step import STEP_STATS, train_step


@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_and_discriminator_shapes(resolution, channels):
    generator, discriminator = build_models(ModelShape(resolution, channels, latent_dim=16, g_features=8, d_features=8))
    images = generator(torch.randn(5, 16))
    assert images.shape == (5, channels, resolution, resolution)
    assert images.min() >= -1 and images.max() <= 1
    assert discriminator(images).shape == (5,)


def test_architecture_follows_the_paper():
    shape = ModelShape(64, 3, latent_dim=100)
    generator, discriminator = Generator(shape), Discriminator(shape)
    g_layers = [type(m).__name__ for m in generator.net]
    d_layers = [type(m).__name__ for m in discriminator.net]
    assert g_layers[-1] == "Tanh" and "Sigmoid" not in d_layers
    assert g_layers.count("ConvTranspose2d") == 5 and d_layers.count("Conv2d") == 5
    assert d_layers[:2] == ["Conv2d", "LeakyReLU"]  # no BatchNorm on the discriminator's input layer
    assert all(m.negative_slope == 0.2 for m in discriminator.net if isinstance(m, torch.nn.LeakyReLU))


def test_weights_start_from_normal_0_002():
    generator, _ = build_models(ModelShape(32, 1, latent_dim=100))
    weights = torch.cat([m.weight.flatten() for m in generator.net if isinstance(m, torch.nn.ConvTranspose2d)])
    assert abs(weights.mean().item()) < 1e-3 and weights.std().item() == pytest.approx(0.02, rel=0.05)


def test_training_steps_move_both_networks_and_report_finite_stats():
    torch.manual_seed(0)
    state = TrainState.create(ModelShape(32, 1, 16, 8, 8), lr=2e-4, beta1=0.5, seed=0)
    before = [p.clone() for p in state.generator.parameters()] + [p.clone() for p in state.discriminator.parameters()]
    real = torch.rand(8, 1, 32, 32) * 2 - 1
    stats = train_step(state, real)
    after = list(state.generator.parameters()) + list(state.discriminator.parameters())
    assert state.step == 1 and stats.shape == (len(STEP_STATS),) and torch.isfinite(stats).all()
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    assert stats[0].item() == pytest.approx(stats[1].item() + stats[2].item(), rel=1e-5)  # D = real + fake
    assert state.opt_g.param_groups[0]["betas"][0] == 0.5
