"""Samples of WebDataset shards that other tools wrote (webdataset.ShardWriter, img2dataset, hub exports): the one
image member of each sample, decoded and fitted to the training shape at load time, and its label from `.cls`, a
`.json` field, or none. Indexing (gan/shards/index.py) and the loader (ImageSpec.decode_sample) share these rules, so
a sample the index accepted is one the loader reads the same way.
"""
from __future__ import annotations

import functools
import io
import json

import numpy as np
from PIL import Image

# Image members this reader decodes, as WebDataset names them (the lower-cased text after the key's first dot).
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
LABEL_SOURCES = "cls, json:FIELD (a dotted path into each sample's .json) or none"


def image_member(sample: dict) -> tuple[str, bytes]:
    """The sample's one image member as (extension, bytes); ValueError when it has none or several."""
    found = [extension for extension in IMAGE_EXTENSIONS if extension in sample]
    if len(found) == 1:
        return found[0], sample[found[0]]
    members = ", ".join(sorted(k for k in sample if not k.startswith("__"))) or "nothing"
    if not found:
        raise ValueError(f"sample {sample.get('__key__')!r} has no image member (has: {members}; read: "
                         f"{', '.join(IMAGE_EXTENSIONS)})")
    raise ValueError(f"sample {sample.get('__key__')!r} has {len(found)} image members ({', '.join(found)}): one "
                     f"image per sample, or split them into separate samples")


# An image a little smaller than the training side (at least this share of it: 28 px digits at 32) is padded out by
# repeating its edge pixels instead of being upscaled; on a plain background that is the packaged MNIST's own zero
# padding. Upscaled, MNIST's 28 px digits trained to 2.75x their floor, padded to 1.71x (docs/quality.md, "The
# default, chosen"). Further below the side (the 8 px digits) padding would leave a small picture in a wide frame.
PAD_SHORTFALL = 0.75


def padded_centre_square(image: Image.Image, resolution: int, channels: int) -> np.ndarray | None:
    """The image's centre square as (resolution, resolution, channels) uint8, its new border repeating the edge
    pixels, when that square is a little smaller than `resolution` (PAD_SHORTFALL); None when it must be resized.
    `image` is already grey or RGB."""
    side = min(image.size)
    if not PAD_SHORTFALL * resolution <= side < resolution:
        return None
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = np.asarray(image.crop((left, top, left + side, top + side)), dtype=np.uint8).reshape(side, side, channels)
    before = (resolution - side) // 2
    return np.pad(square, ((before, resolution - side - before),) * 2 + ((0, 0),), mode="edge")


def fit_image(body: bytes, resolution: int, channels: int) -> np.ndarray:
    """Image bytes -> (channels, resolution, resolution) uint8: grey or RGB, the centre square scaled to size (or,
    a little smaller than it, padded: `padded_centre_square`).

    A JPEG is decoded at the smallest power-of-two reduction that still covers the target (`draft`, libjpeg's DCT
    scaling), which at 256 -> 64 px does a quarter of the decoding work (bench/loader.py measures it)."""
    mode = "L" if channels == 1 else "RGB"
    with Image.open(io.BytesIO(body)) as image:
        image.draft(mode, (resolution, resolution))
        image = image.convert(mode)
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        padded = padded_centre_square(image, resolution, channels)
        if padded is not None:
            return np.ascontiguousarray(padded.transpose(2, 0, 1))
        image = image.resize((resolution, resolution), Image.Resampling.BICUBIC,
                             box=(left, top, left + side, top + side), reducing_gap=2.0)
        array = np.asarray(image, dtype=np.uint8)
    return np.ascontiguousarray(array.reshape(resolution, resolution, channels).transpose(2, 0, 1))


def image_size(body: bytes) -> tuple[int, int]:
    """(width, height) from the image's header alone, without decoding it."""
    with Image.open(io.BytesIO(body)) as image:
        return image.size


def check_label_source(label_source: str) -> str:
    if label_source in ("cls", "none") or (label_source.startswith("json:") and len(label_source) > 5):
        return label_source
    raise ValueError(f"--labels {label_source!r}: use {LABEL_SOURCES}")


def label_value(sample: dict, label_source: str) -> str | None:
    """The sample's raw label as text (None for `none`); ValueError naming the missing member or field."""
    if label_source == "none":
        return None
    key = sample.get("__key__")
    if label_source == "cls":
        if "cls" not in sample:
            raise ValueError(f"sample {key!r} has no .cls member; index with --labels json:FIELD or --labels none")
        return sample["cls"].decode().strip()
    path = label_source.removeprefix("json:")
    if "json" not in sample:
        raise ValueError(f"sample {key!r} has no .json member to read label field {path!r} from")
    value = json.loads(sample["json"])
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            present = ", ".join(sorted(value)) if isinstance(value, dict) else type(value).__name__
            raise ValueError(f"sample {key!r}: its .json has no field {path!r} (has: {present}); name the label "
                             f"field with --labels json:FIELD, or index with --labels none")
        value = value[part]
    return str(value)


def sorted_label_values(values: set[str]) -> tuple[str, ...]:
    """Class order: numerically when every label is an integer (so .cls 0..9 keep their indices), else by text."""
    if all(value.lstrip("-").isdigit() for value in values):
        return tuple(sorted(values, key=int))
    return tuple(sorted(values))


@functools.lru_cache(maxsize=16)
def _positions(label_values: tuple[str, ...]) -> dict[str, int]:
    return {value: index for index, value in enumerate(label_values)}


def label_index(sample: dict, label_source: str, label_values: tuple[str, ...]) -> int:
    """The sample's class index in the manifest's class order (0 for an unlabelled set's one class)."""
    value = label_value(sample, label_source)
    if value is None:
        return 0
    try:
        return _positions(label_values)[value]
    except KeyError:
        raise ValueError(f"sample {sample.get('__key__')!r} has label {value!r}, which is not among the "
                         f"{len(label_values)} classes indexed; the shards changed since: index them again") from None
