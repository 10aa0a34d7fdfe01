"""Elastic training's data rule on real digits: a group smaller than --num-workers reads exactly the batches the
full group would (same global batch, same schedule), and its ranks' loss weights make DDP's average the global
batch's gradient. The run itself, a node lost and one added back, is in tests/test_multinode.py."""
import pytest
import torch

from gan.config import ConfigError, TrainConfig, validate
from gan.shards.batches import joined_batches, plan_epoch, planned_ranks_of, rank_batches, share_weight
from gan.shards.manifest import read_manifest


@pytest.mark.parametrize("planned", [1, 2, 3, 4, 7])
def test_every_group_size_reads_each_planned_share_exactly_once(planned):
    for world_size in range(1, planned + 1):
        shares = [r for rank in range(world_size) for r in planned_ranks_of(rank, world_size, planned)]
        assert sorted(shares) == list(range(planned))
    with pytest.raises(ValueError, match="cannot read a plan"):
        planned_ranks_of(0, planned + 1, planned)


def test_two_ranks_standing_in_for_three_train_on_the_same_batches(digits_shards):
    manifest = read_manifest(str(digits_shards))
    plan = plan_epoch(manifest.shards("train"), world_size=3, batch_size=16, epoch=2, seed=0, max_steps=6)

    def share(planned_rank):  # as gan/run/worker.py reads a planned rank: its own seed, whatever rank reads it
        return rank_batches(str(digits_shards), plan, planned_rank, manifest.image_spec, 50, seed=planned_rank)

    full_group = [list(share(r)) for r in range(3)]
    for rank in range(2):
        mine = planned_ranks_of(rank, 2, 3)
        joined = list(joined_batches([share(r) for r in mine]))
        assert len(joined) == plan.steps
        for step, (images, labels) in enumerate(joined):
            assert images.shape[0] == 16 * len(mine)
            assert torch.equal(images, torch.cat([full_group[r][step][0] for r in mine]))
            assert torch.equal(labels, torch.cat([full_group[r][step][1] for r in mine]))


@pytest.mark.parametrize("planned,world_size", [(3, 2), (3, 1), (4, 3), (2, 2)])
def test_weighted_rank_losses_average_to_the_global_batch_gradient(planned, world_size):
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 1)
    batch = 4
    shares = [(torch.randn(batch, 5), torch.randint(0, 2, (batch, 1)).float()) for _ in range(planned)]
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits

    def gradient(images, targets, weight=1.0):
        model.zero_grad()
        loss_fn(model(images), targets).mul(weight).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    everything = gradient(torch.cat([x for x, _ in shares]), torch.cat([y for _, y in shares]))
    averaged = sum(gradient(torch.cat([shares[r][0] for r in planned_ranks_of(rank, world_size, planned)]),
                            torch.cat([shares[r][1] for r in planned_ranks_of(rank, world_size, planned)]),
                            share_weight(rank, world_size, planned))
                   for rank in range(world_size)) / world_size  # what DDP's all-reduce does
    assert torch.allclose(averaged, everything, atol=1e-6)
    if planned % world_size:  # unequal shares: without the weights the average is off
        unweighted = sum(gradient(torch.cat([shares[r][0] for r in planned_ranks_of(rank, world_size, planned)]),
                                  torch.cat([shares[r][1] for r in planned_ranks_of(rank, world_size, planned)]))
                         for rank in range(world_size)) / world_size
        assert not torch.allclose(unweighted, everything, atol=1e-4)


def test_min_workers_above_num_workers_is_refused_naming_both():
    with pytest.raises(ConfigError, match="--min-workers 3 is more than --num-workers 2"):
        validate(TrainConfig(min_workers=3, num_workers=2))
    assert TrainConfig(min_workers=1, num_workers=3).elastic
    assert not TrainConfig(min_workers=2, num_workers=2).elastic and not TrainConfig().elastic
