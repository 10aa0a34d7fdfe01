"""Shared fixtures: a tiny real shard set built from the bundled digits, and one local Ray for the session."""
from __future__ import annotations

from pathlib import Path

import pytest

from gan.shard_writer import write_shards
from gan.sources import load_digits

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def digits_shards(tmp_path_factory) -> Path:
    """All 1,797 digits at 32x32x1 in 100-image shards (17 train, 2 holdout)."""
    out = tmp_path_factory.mktemp("digits")
    write_shards(load_digits(32, 1), str(out), samples_per_shard=100, holdout_fraction=0.1, seed=0)
    return out


@pytest.fixture(scope="session")
def local_ray():
    """A real local Ray instance (2 CPUs) shared by the tests that train; shut down at the end."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()
