"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training"): the same random,
differentiable transforms on real and generated images before every discriminator call, in the D step and the G step,
so D cannot overfit a small training set and G's gradients still flow through the transform. Pure torch.

Each image gets its own parameters, drawn afresh at every call: the real batch and the fake batch are augmented
independently but from the same distribution. (Augmenting only the reals, or differently, would teach G to
reproduce the augmentation, the "leak" the paper warns of.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from gan.config_fields import ConfigError

TRANSFORMS = ("translation", "cutout", "color")
TRANSLATION_RATIO = 1 / 8  # shift up to 1/8 of the side, padded with 0 (mid-grey in [-1, 1]), as the paper
CUTOUT_RATIO = 1 / 2  # a square of half the side set to 0


def parse_policy(policy: str, channels: int = 1) -> tuple[str, ...]:
    """'translation,cutout' -> ('translation', 'cutout'); '' = off; 'auto' = the paper's policy for these images:
    translation and cutout, plus colour for RGB."""
    if policy.strip() == "auto":
        return ("translation", "cutout") + (("color",) if channels == 3 else ())
    names = tuple(name.strip() for name in policy.split(",") if name.strip())
    unknown = [name for name in names if name not in TRANSFORMS]
    if unknown or len(set(names)) != len(names):
        raise ConfigError(f"--diffaugment={policy!r}: use a comma-separated subset of {', '.join(TRANSFORMS)} "
                          f"(each once), 'auto' or '' for none")
    return names


def sample_params(images: torch.Tensor, policy: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """One set of random parameters per image for each transform in the policy."""
    batch, _, height, width = images.shape
    device, params = images.device, {}
    if "color" in policy:
        params["brightness"] = torch.rand(batch, 1, 1, 1, device=device) - 0.5  # added: [-0.5, 0.5)
        params["saturation"] = torch.rand(batch, 1, 1, 1, device=device) * 2  # distance from grey scaled by [0, 2)
        params["contrast"] = torch.rand(batch, 1, 1, 1, device=device) + 0.5  # distance from the mean by [0.5, 1.5)
    if "translation" in policy:
        shift_y, shift_x = int(height * TRANSLATION_RATIO + 0.5), int(width * TRANSLATION_RATIO + 0.5)
        params["shift"] = torch.stack([torch.randint(-shift_y, shift_y + 1, (batch,), device=device),
                                       torch.randint(-shift_x, shift_x + 1, (batch,), device=device)], 1)
    if "cutout" in policy:
        size = int(height * CUTOUT_RATIO + 0.5)
        params["cutout_size"] = torch.tensor(size, device=device)
        # The square's centre, as the paper draws it (it may hang over the edge).
        params["cutout_centre"] = torch.stack([torch.randint(0, height + (1 - size % 2), (batch,), device=device),
                                               torch.randint(0, width + (1 - size % 2), (batch,), device=device)], 1)
    return params


def apply(images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The transforms with these parameters, in the paper's order (colour, translation, cutout); differentiable in
    the images."""
    out = images
    if "brightness" in params:
        out = out + params["brightness"]
        grey = out.mean(dim=1, keepdim=True)
        out = (out - grey) * params["saturation"] + grey
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * params["contrast"] + mean
    if "shift" in params:
        out = translate(out, params["shift"])
    if "cutout_centre" in params:
        out = out * cutout_mask(out, params["cutout_centre"], int(params["cutout_size"]))
    if images.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def diffaugment(images: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    return apply(images, sample_params(images, policy)) if policy else images


def translate(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Image i's content moved down by shift[i, 0] and right by shift[i, 1] pixels; uncovered pixels are 0."""
    batch, channels, height, width = images.shape
    padded = F.pad(images, (1, 1, 1, 1))  # row/column 0 and -1 are the zero fill that indices outside clamp to
    rows = (torch.arange(height, device=images.device)[None] - shift[:, :1] + 1).clamp(0, height + 1)
    cols = (torch.arange(width, device=images.device)[None] - shift[:, 1:] + 1).clamp(0, width + 1)
    index_b = torch.arange(batch, device=images.device)[:, None, None, None]
    index_c = torch.arange(channels, device=images.device)[None, :, None, None]
    return padded[index_b, index_c, rows[:, None, :, None], cols[:, None, None, :]]


def cutout_mask(images: torch.Tensor, centre: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 1, H, W) of ones with a size x size square of zeros around each image's centre (clipped at the edges)."""
    _, _, height, width = images.shape
    top, left = centre[:, :1] - size // 2, centre[:, 1:] - size // 2
    rows = torch.arange(height, device=images.device)[None]
    cols = torch.arange(width, device=images.device)[None]
    inside_rows = (rows >= top) & (rows < top + size)
    inside_cols = (cols >= left) & (cols < left + size)
    return (~(inside_rows[:, :, None] & inside_cols[:, None, :]))[:, None].to(images.dtype)
