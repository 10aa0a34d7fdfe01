"""A trained generator, wherever it lives, turned into pictures: a grid of samples, or rows that walk the latent
space between random pairs of points (spherical interpolation, since Gaussian z concentrates near a sphere and a
straight line between two points passes through improbably short vectors; White 2016, "Sampling Generative
Networks")."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch

from gan.shards import storage
from gan.tracking.global_uri import global_tracking_uri
from gan.training.images import GRID_COLUMNS, class_rows, image_grid
from gan.training.models import PackedClassInput

MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


@dataclass
class Sampler:
    """A generator ready to draw from: `sampler(z)` gives images in [-1, 1] for z of shape (N, latent_dim); a
    conditional one (num_classes > 0) takes `sampler(z, classes)`. `module` takes what the logged model takes: z,
    or z with the class appended (gan/training/models.py PackedClassInput)."""

    module: torch.nn.Module
    latent_dim: int
    source: str
    num_classes: int = 0

    @torch.no_grad()
    def __call__(self, z: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        z = z.float()
        if self.num_classes:
            if classes is None or int(classes.min()) < 0 or int(classes.max()) >= self.num_classes:
                raise ValueError(f"{self.source} is class-conditional: give each image a class in 0.."
                                 f"{self.num_classes - 1}")
            z = PackedClassInput.pack(z, classes)
        elif classes is not None:
            raise ValueError(f"{self.source} is not class-conditional: it draws no --class")
        return torch.cat([self.module(chunk) for chunk in z.split(500)])


def load(reference: str, tracking_uri: str = "") -> Sampler:
    """`models:/NAME@ALIAS`, `models:/NAME/VERSION`, `models:/<model id>`, `runs:/<run id>/<path>` (MLflow; needs
    only mlflow and torch), or a Ray Train checkpoint directory (local or s3://; needs this package)."""
    if reference.startswith(MLFLOW_SCHEMES):
        with global_tracking_uri(tracking_uri) if tracking_uri else contextlib.nullcontext():
            info = mlflow.models.get_model_info(reference)
            module = mlflow.pytorch.load_model(reference, map_location="cpu")
        num_classes = int((info.metadata or {}).get("num_classes", 0))
        latent_dim = int(info.signature.inputs.inputs[0].shape[-1]) - (1 if num_classes else 0)
        return Sampler(module, latent_dim, reference, num_classes)
    if storage.is_s3(reference) or Path(reference).is_dir():
        from gan.training.checkpoint import load_generator

        generator = load_generator(reference)
        classes = generator.shape.num_classes
        return Sampler(PackedClassInput(generator) if classes else generator, generator.shape.latent_dim, reference,
                       classes)
    raise ValueError(f"--model {reference}: neither an MLflow model URI (models:/dcgan-mnist@champion, "
                     f"models:/<model id>, runs:/<run id>/<path>) nor a checkpoint directory")


def noise(count: int, latent_dim: int, seed: int) -> torch.Tensor:
    return torch.randn(count, latent_dim, generator=torch.Generator().manual_seed(seed))


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points along the great circle from a to b (rows), at fractions t; linear where a and b are parallel."""
    a_unit, b_unit = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_unit * b_unit).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    sin = torch.sin(omega)
    t = t.view(-1, 1)
    return (torch.sin((1 - t) * omega) / sin) * a + (torch.sin(t * omega) / sin) * b


def interpolations(latent_dim: int, rows: int, steps: int, seed: int) -> torch.Tensor:
    """rows x steps latent vectors: each row goes from one random point to another, ends included."""
    ends = noise(2 * rows, latent_dim, seed)
    t = torch.linspace(0, 1, steps)
    return torch.cat([slerp(ends[2 * row].expand(steps, -1), ends[2 * row + 1].expand(steps, -1), t)
                      for row in range(rows)])


def sample_picture(sampler: Sampler, count: int, seed: int, interpolate: int = 0, class_index: int = -1) -> np.ndarray:
    """A grid of `count` samples (8 to a row), or with `interpolate` K, `count // K` rows of K interpolation steps.

    A conditional generator draws `class_index` throughout, or when it is -1 one row per class (the same latent
    vectors in every row) or, interpolating, row r in class r."""
    if class_index >= 0 and not sampler.num_classes:
        raise ValueError(f"--class {class_index}: {sampler.source} is not class-conditional")
    if class_index >= sampler.num_classes > 0:
        raise ValueError(f"--class {class_index}: {sampler.source} draws classes 0..{sampler.num_classes - 1}")
    if interpolate:
        z = interpolations(sampler.latent_dim, max(1, count // interpolate), interpolate, seed)
        return image_grid(sampler(z, _classes_of_rows(sampler, len(z) // interpolate, interpolate, class_index)),
                          columns=interpolate)
    z = noise(count, sampler.latent_dim, seed)
    if sampler.num_classes and class_index < 0:
        z, classes = class_rows(z, sampler.num_classes)
        return image_grid(sampler(z, classes), columns=GRID_COLUMNS)
    return image_grid(sampler(z, _classes_of_rows(sampler, count, 1, class_index)), columns=min(8, count))


def _classes_of_rows(sampler: Sampler, rows: int, per_row: int, class_index: int) -> torch.Tensor | None:
    if not sampler.num_classes:
        return None
    by_row = torch.full((rows,), class_index) if class_index >= 0 else torch.arange(rows) % sampler.num_classes
    return by_row.repeat_interleave(per_row)
