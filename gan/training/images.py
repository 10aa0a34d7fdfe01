"""Generated images -> one grid picture (uint8 array) for MLflow and the README."""
from __future__ import annotations

import math

import numpy as np
import torch


def image_grid(images: torch.Tensor, columns: int = 8, padding: int = 2) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (rows*(H+p)+p, cols*(W+p)+p, C) uint8 on a white background (C = 1 or 3)."""
    count, channels, height, width = images.shape
    rows = math.ceil(count / columns)
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    grid = np.full((rows * (height + padding) + padding, columns * (width + padding) + padding, channels), 255,
                   dtype=np.uint8)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        grid[top:top + height, left:left + width] = pixels[index].transpose(1, 2, 0)
    return grid[:, :, 0] if channels == 1 else grid


GRID_COLUMNS = 8
MAX_GRID_CLASSES = 16  # rows of a conditional generator's grid: its first classes, one row each


def class_rows(noise: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, classes) for a grid with one row per class and the same GRID_COLUMNS latent vectors in every row, so a
    column shows one z drawn as each class."""
    rows = min(num_classes, MAX_GRID_CLASSES)
    return noise[:GRID_COLUMNS].repeat(rows, 1), torch.arange(rows).repeat_interleave(GRID_COLUMNS)


@torch.no_grad()
def sample_grid(generator: torch.nn.Module, noise: torch.Tensor) -> np.ndarray:
    """The generator's images for fixed noise, in eval mode (BatchNorm running statistics), as a grid; a
    conditional generator's (`shape.num_classes`) as one row per class."""
    was_training = generator.training
    generator.eval()
    try:
        device = next(generator.parameters()).device
        if generator.shape.num_classes:
            z, classes = class_rows(noise, generator.shape.num_classes)
            return image_grid(generator(z.to(device), classes.to(device)), columns=GRID_COLUMNS)
        return image_grid(generator(noise.to(device)))
    finally:
        generator.train(was_training)
