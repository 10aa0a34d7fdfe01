"""A user's RGB folder at 64x64 becomes shards and trains with DiffAugment's colour transform (auto for RGB)."""
import math

import numpy as np
import torch
from PIL import Image

from gan.shards.batches import normalise, plan_epoch, rank_batches
from gan.shards.sources import load_digits, load_folder
from gan.shards.writer import write_shards
from gan.training.augment import parse_policy
from gan.training.models import ModelShape
from gan.training.state import TrainState
from gan.training.step import STEP_STATS, train_step


def test_an_rgb_64px_folder_trains_with_colour_augmentation(tmp_path):
    # Real digit scans, tinted per class and saved as photos would be: one sub-folder per class.
    digits = load_digits(64, 3)
    for index in range(120):
        label = int(digits.labels[index]) % 2
        tint = np.array([1.0, 0.4, 0.2]) if label else np.array([0.2, 0.6, 1.0])
        folder = tmp_path / "photos" / ("warm" if label else "cool")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[index] * tint).astype(np.uint8)).save(folder / f"{index}.jpg")
    data = load_folder(str(tmp_path / "photos"), 64, 3)
    manifest = write_shards(data, str(tmp_path / "shards"), 20, 0.1, 0)
    assert (manifest.resolution, manifest.channels, manifest.class_names) == (64, 3, ["cool", "warm"])

    policy = parse_policy("auto", manifest.channels)
    assert "color" in policy
    state = TrainState.create(ModelShape(64, 3, 16, 8, 8), 2e-4, 0.5, seed=0, augment=policy, ema_half_life_kimg=0.1)
    plan = plan_epoch(manifest.shards("train"), 1, 16, 0, 0)
    for images, _ in rank_batches(str(tmp_path / "shards"), plan, 0, manifest.image_spec, 50, 0):
        stats = dict(zip(STEP_STATS, train_step(state, normalise(images)).tolist()))
        assert all(math.isfinite(value) for value in stats.values()), stats
    assert state.step == plan.steps >= 5
    with torch.no_grad():
        samples = state.sampler(torch.randn(4, 16))
    assert samples.shape == (4, 3, 64, 64) and samples.abs().max() <= 1
