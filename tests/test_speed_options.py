"""The speed options change layout and precision, not behaviour: every path trains and keeps stats finite."""
import pytest
import torch

from gan.training.models import ModelShape
from gan.training.state import TrainState, unwrap
from gan.training.step import STEP_STATS, train_step


def _state() -> TrainState:
    return TrainState.create(ModelShape(32, 1, 16, 8, 8), lr=2e-4, beta1=0.5, seed=0)


def test_bf16_autocast_step_keeps_float32_weights_and_finite_stats():
    state, real = _state(), torch.rand(8, 1, 32, 32) * 2 - 1
    stats = train_step(state, real, bf16=True)
    assert stats.dtype == torch.float32 and stats.shape == (len(STEP_STATS),) and torch.isfinite(stats).all()
    assert all(p.dtype == torch.float32 for p in state.generator.parameters())


def test_channels_last_gives_the_same_step_as_the_default_layout():
    torch.manual_seed(0)
    default, real = _state(), torch.rand(8, 1, 32, 32) * 2 - 1
    torch.manual_seed(1)
    expected = train_step(default, real)
    nhwc = _state()
    nhwc.generator.to(memory_format=torch.channels_last)
    nhwc.discriminator.to(memory_format=torch.channels_last)
    torch.manual_seed(1)
    got = train_step(nhwc, real.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(expected, got, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compiled_networks_train_and_unwrap_for_checkpoints():
    state = _state()
    state.generator, state.discriminator = torch.compile(state.generator), torch.compile(state.discriminator)
    assert torch.isfinite(train_step(state, torch.rand(8, 1, 32, 32) * 2 - 1)).all()
    assert type(unwrap(state.generator)).__name__ == "Generator"
    assert set(state.state_dict()["generator"]) == set(unwrap(state.generator).state_dict())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")
def test_gpu_step_with_bf16_and_channels_last():
    state = _state()
    state.generator.cuda().to(memory_format=torch.channels_last)
    state.discriminator.cuda().to(memory_format=torch.channels_last)
    real = (torch.rand(64, 1, 32, 32, device="cuda") * 2 - 1).contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(train_step(state, real, bf16=True)).all()
