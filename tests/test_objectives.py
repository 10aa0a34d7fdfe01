"""The GAN objective's options: hinge loss, spectral norm in D, lazy R1, mode seeking; each what its paper defines,
and a step
under DDP whose double backward still leaves both ranks with the same weights."""
import pytest
import torch
from torch import nn

from gan.training.losses import Objective, fake_loss, generator_loss, mode_seeking_term, r1_penalty, real_loss
from gan.training.models import Discriminator, ModelShape
from gan.training.state import TrainState
from gan.training.step import STEP_STATS, step_stats, train_step

SPECTRAL = ModelShape(32, 1, latent_dim=8, g_features=4, d_features=8, d_norm="spectral")


def test_hinge_losses_are_the_margins_and_g_takes_ds_mean_score():
    assert real_loss(torch.tensor([2.0, 0.5]), "hinge").item() == pytest.approx(0.25)  # relu(1 - x)
    assert fake_loss(torch.tensor([-2.0, 0.5]), "hinge").item() == pytest.approx(0.75)  # relu(1 + x)
    assert generator_loss(torch.tensor([1.0, 3.0]), "hinge").item() == pytest.approx(-2.0)
    assert real_loss(torch.tensor([0.0])).item() == pytest.approx(0.6931, rel=1e-3)  # bce stays the default


def test_r1_is_gamma_half_the_squared_input_gradient_scaled_by_its_interval():
    weights = torch.randn(1, 3, 2, 2)
    linear = nn.Conv2d(3, 1, 2, bias=False)  # D(x) = <w, x>: its input gradient is w for every image
    linear.weight.data.copy_(weights)
    images = torch.randn(5, 3, 2, 2, requires_grad=True)
    penalty = r1_penalty(linear(images).flatten(), images, Objective(r1_gamma=0.5, r1_every=4))
    assert penalty.item() == pytest.approx(0.5 / 2 * 4 * weights.square().sum().item(), rel=1e-5)
    penalty.backward()  # the penalty's own gradient reaches D's weights: d/dw (gamma/2 * every * |w|^2)
    assert torch.allclose(linear.weight.grad, 0.5 * 4 * weights, rtol=1e-5)


def test_lazy_r1_falls_on_every_nth_step_and_never_when_off():
    assert [Objective(r1_gamma=1.0, r1_every=4).r1_due(step) for step in range(6)] == [1, 0, 0, 0, 1, 0]
    assert not any(Objective().r1_due(step) for step in range(20))
    assert step_stats(Objective()) == STEP_STATS and step_stats(Objective(r1_gamma=1.0))[-1] == "loss/R1"


def test_a_spectral_discriminator_has_no_batchnorm_and_each_conv_a_largest_singular_value_of_one():
    discriminator = Discriminator(SPECTRAL)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in discriminator.modules())
    for _ in range(30):  # training-mode forwards run the power iteration
        discriminator(torch.randn(4, 1, 32, 32))
    convs = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4
    for conv in convs:
        assert torch.linalg.matrix_norm(conv.weight.detach().flatten(1), 2).item() == pytest.approx(1.0, rel=0.02)
    with pytest.raises(ValueError, match="d_norm must be one of batch, spectral"):
        Discriminator(ModelShape(32, 1, 8, d_norm="layer"))


def test_a_step_with_hinge_spectral_norm_and_r1_moves_both_networks_and_logs_the_penalty_when_due():
    state = TrainState.create(SPECTRAL, 2e-4, 0.5, seed=0, objective=Objective("hinge", r1_gamma=1.0, r1_every=2))
    before = [p.clone() for p in [*state.generator.parameters(), *state.discriminator.parameters()]]
    real = torch.rand(8, 1, 32, 32) * 2 - 1
    first, second = dict(zip(step_stats(state.objective), train_step(state, real).tolist())), None
    second = dict(zip(step_stats(state.objective), train_step(state, real).tolist()))
    after = [*state.generator.parameters(), *state.discriminator.parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    assert first["loss/R1"] > 0 and second["loss/R1"] == 0  # step 0 carries it, step 1 does not
    assert first["loss/D"] == pytest.approx(first["loss/D_real"] + first["loss/D_fake"], rel=1e-5)


def _steps_on_two_ranks(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        state = TrainState.create(SPECTRAL, 2e-4, 0.5, seed=0, objective=Objective("hinge", r1_gamma=1.0, r1_every=2))
        state.generator = DistributedDataParallel(state.generator)
        state.discriminator = DistributedDataParallel(state.discriminator, broadcast_buffers=False)
        torch.manual_seed(rank)  # each rank its own real batch and noise
        for _ in range(3):
            train_step(state, torch.rand(4, 1, 32, 32) * 2 - 1)
        torch.save(state.state_dict()["discriminator"], f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_r1s_double_backward_under_ddp_leaves_both_ranks_with_the_same_discriminator(tmp_path):
    import torch.multiprocessing as mp

    from tests.services import free_port

    mp.spawn(_steps_on_two_ranks, args=(free_port(), str(tmp_path / "d")), nprocs=2)
    ranks = [torch.load(f"{tmp_path / 'd'}.{rank}", weights_only=True) for rank in (0, 1)]
    weights = [key for key in ranks[0] if key.endswith("original")]
    assert len(weights) == 4
    for key in weights:  # gradients were all-reduced: the same update on both ranks from different batches
        assert torch.allclose(ranks[0][key], ranks[1][key], atol=1e-6), key


def test_mode_seeking_is_its_weight_over_the_image_to_latent_distance_ratio_of_the_two_halves():
    noise = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, -1.0]])  # pairs (0, 2), (1, 3): mean |dz| 2
    fake = torch.zeros(4, 1, 2, 2)
    fake[2:] = 0.5  # mean |dG| 0.5: ratio 0.25
    assert mode_seeking_term(fake, noise, 2.0).item() == pytest.approx(2.0 / (0.25 + 1e-5))
    collapsed = mode_seeking_term(torch.zeros(4, 1, 2, 2), noise, 2.0).item()  # one image for every z
    assert collapsed == pytest.approx(2.0 / 1e-5)


def test_a_conditional_step_with_mode_seeking_pairs_each_fake_with_one_of_the_same_class(monkeypatch):
    shape = ModelShape(32, 1, latent_dim=8, g_features=4, d_features=8, num_classes=10)
    state = TrainState.create(shape, 2e-4, 0.5, seed=0, objective=Objective(mode_seeking=1.0))
    drawn = []
    forward = type(state.generator).forward
    monkeypatch.setattr(type(state.generator), "forward", lambda self, z, classes=None: (
        drawn.append(classes.clone()), forward(self, z, classes))[1])
    real_classes = torch.tensor([3, 1, 4, 1, 5, 9, 2])  # odd: the last fake takes a class of its own half
    stats = dict(zip(step_stats(state.objective), train_step(state, torch.rand(7, 1, 32, 32) * 2 - 1,
                                                             classes=real_classes).tolist()))
    (classes,) = drawn
    assert classes[:3].tolist() == classes[3:6].tolist() == [3, 1, 4] and classes[6] in real_classes
    assert stats["loss/mode_seeking"] > 0 and step_stats(Objective())[-1] != "loss/mode_seeking"
