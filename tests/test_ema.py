"""The generator's EMA: the half-life arithmetic, the ramp-up, and that it survives a checkpoint round trip."""
import pytest
import torch

from gan.training.checkpoint import load_checkpoint, load_generator, save_checkpoint
from gan.training.ema import GeneratorEMA
from gan.training.models import ModelShape
from gan.training.state import TrainState

SHAPE = ModelShape(32, 1, latent_dim=8, g_features=4, d_features=4)


def test_after_one_half_life_of_images_the_average_is_half_way():
    live = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(live.weight)
    ema = GeneratorEMA(live, half_life_kimg=1.0, rampup=0.0)
    torch.nn.init.ones_(live.weight)  # the weights jump to 1; the average started at 0
    for step in range(1, 11):  # 10 steps of 100 images = one half-life
        ema.update(live, images_seen=step * 100, batch_images=100)
    assert ema.model.weight.item() == pytest.approx(0.5, rel=1e-6)


def test_the_ramp_up_caps_the_half_life_early_in_training():
    ema = GeneratorEMA(torch.nn.Linear(1, 1), half_life_kimg=10.0, rampup=0.05)
    # After 2,000 images the half-life is at most 100 images: a step of 100 images halves the old average's weight.
    assert ema.beta(images_seen=2_000, batch_images=100) == pytest.approx(0.5)
    assert ema.beta(images_seen=10_000_000, batch_images=100) == pytest.approx(0.5 ** (100 / 10_000))


def test_ema_state_survives_a_checkpoint_and_is_what_gets_saved(tmp_path):
    state = TrainState.create(SHAPE, 2e-4, 0.5, seed=0, ema_half_life_kimg=1.0, ema_rampup=0.0)
    with torch.no_grad():
        for param in state.ema.model.parameters():
            param.add_(torch.randn_like(param))  # the average differs from the live generator
    state.step, state.epoch = 7, 1
    save_checkpoint(state, tmp_path / "ckpt", {"model_shape": SHAPE.__dict__})
    restored = TrainState.create(SHAPE, 2e-4, 0.5, seed=1, ema_half_life_kimg=1.0, ema_rampup=0.0)
    load_checkpoint(restored, tmp_path / "ckpt")
    for a, b in zip(state.ema.model.state_dict().values(), restored.ema.model.state_dict().values()):
        assert torch.equal(a, b)
    # The generator a checkpoint gives to sample from is the EMA one, not the raw one.
    saved = load_generator(str(tmp_path / "ckpt"))
    z = torch.randn(4, SHAPE.latent_dim)
    with torch.no_grad():
        assert torch.equal(saved(z), state.sampler(z))
        assert not torch.equal(saved(z), state.generator.eval()(z))
    # Unless the measurement at that report chose the raw one (it scored better): then the raw one.
    save_checkpoint(state, tmp_path / "raw", {"model_shape": SHAPE.__dict__, "sampled_generator": "raw"})
    with torch.no_grad():
        assert torch.equal(load_generator(str(tmp_path / "raw"))(z), state.generator.eval()(z))


def test_the_ema_generator_s_batchnorm_statistics_are_measured_for_its_own_weights():
    state = TrainState.create(SHAPE, 2e-4, 0.5, seed=0, ema_half_life_kimg=1.0)
    with torch.no_grad():
        for param in state.ema.model.parameters():
            param.mul_(3.0)  # averaged weights whose activations the live generator's statistics do not describe
    sampler = state.sampler
    first_conv, first_norm = sampler.net[0], sampler.net[1]
    with torch.no_grad():
        activations = first_conv(torch.randn(4096, SHAPE.latent_dim, 1, 1))
    assert torch.allclose(first_norm.running_mean, activations.mean(dim=(0, 2, 3)), rtol=0.1, atol=0.02)
    assert not sampler.training and not state.ema.stale
    state.step += 1
    state.ema.update(state.generator, 100, 10)
    assert state.ema.stale  # new weights: measured again at the next use


def test_a_checkpoint_from_before_the_ema_starts_the_average_at_its_weights(tmp_path):
    plain = TrainState.create(SHAPE, 2e-4, 0.5, seed=3)
    save_checkpoint(plain, tmp_path / "old", {})
    with_ema = TrainState.create(SHAPE, 2e-4, 0.5, seed=4, ema_half_life_kimg=1.0)
    load_checkpoint(with_ema, tmp_path / "old")
    for a, b in zip(with_ema.ema.model.state_dict().values(), plain.generator.state_dict().values()):
        assert torch.equal(a, b)


def _averaged_generator(shape: ModelShape) -> GeneratorEMA:
    return GeneratorEMA(TrainState.create(shape, 2e-4, 0.5, seed=0).generator, half_life_kimg=1.0, rampup=0.0)


def _statistics_on_two_ranks(rank: int, port: int, shape: ModelShape, weights: dict, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        ema = _averaged_generator(shape)
        ema.model.load_state_dict(weights)
        ema.measure_statistics(rank, world_size=2)
        if rank == 0:
            torch.save(ema.model.state_dict(), out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("classes", [0, 3])
def test_statistics_measured_across_two_ranks_are_the_ones_one_process_measures(tmp_path, classes):
    """Each rank runs half the fixed latent batches and the ranks average: the state a checkpoint saves must be
    what one process running them all would save (real gloo collectives in two processes)."""
    import torch.multiprocessing as mp

    from tests.services import free_port

    shape = ModelShape(32, 1, latent_dim=8, g_features=4, d_features=4, num_classes=classes)
    alone = _averaged_generator(shape)
    with torch.no_grad():
        for param in alone.model.parameters():
            param.add_(torch.randn_like(param) * 0.1)  # weights whose statistics differ from the initial ones
    weights = {k: v.clone() for k, v in alone.model.state_dict().items()}
    alone.measure_statistics()
    mp.spawn(_statistics_on_two_ranks, args=(free_port(), shape, weights, str(tmp_path / "two.pt")), nprocs=2)
    shared = torch.load(tmp_path / "two.pt", weights_only=True)
    for key, value in alone.model.state_dict().items():
        assert torch.allclose(value.float(), shared[key].float(), rtol=1e-5, atol=1e-6), key
    assert any("running_var" in key for key in shared)
