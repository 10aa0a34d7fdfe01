"""How one image is stored inside a shard: (H, W, C) uint8 -> bytes in a tar member named {key}.{format}, and back
to (C, H, W) uint8, checked against the shape the manifest promises.

- npy (the default): the C x H x W uint8 array as a standard .npy file, so `webdataset.WebDataset(url).decode()`
  and `numpy.load` read our shards as they are. Its header is a fixed 128 bytes for a given shape, so decoding is a
  comparison with that header and a view of the rest (about 1 µs at 32x32): the loader's per-sample cost stays
  WebDataset's tar walk alone, what a GPU at tens of thousands of img/s needs.
- raw: the same bytes without the header (shards written before npy; still read).
- png: lossless and 2-4x smaller at 64x64x3, viewable with any tool; decoding a 32x32 PNG costs about 55 µs.

Shards other tools wrote (jpg, webp, png at any size) are indexed, not written: gan/shards/foreign.py decodes them.
"""
from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from gan.shards import foreign

IMAGE_FORMATS = ("npy", "raw", "png")


@functools.lru_cache(maxsize=8)
def npy_header(shape: tuple[int, ...]) -> bytes:
    """The .npy header numpy writes before a C-ordered uint8 array of this shape."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def encode_image(image: np.ndarray, image_format: str) -> bytes:
    """(H, W, C) uint8 -> the bytes of one tar member."""
    if image_format in ("npy", "raw"):
        planar = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.uint8)
        return (npy_header(planar.shape) if image_format == "npy" else b"") + planar.tobytes()
    if image_format == "png":
        buffer = io.BytesIO()
        Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()
    raise ValueError(f"unknown image format {image_format!r} (known: {', '.join(IMAGE_FORMATS)})")


def decode_image(body: bytes, image_format: str, resolution: int, channels: int) -> np.ndarray:
    """One tar member's bytes -> (C, H, W) uint8; ValueError for an image of the wrong size or channel count."""
    promised = (channels, resolution, resolution)
    if image_format in ("npy", "raw"):
        header = npy_header(promised) if image_format == "npy" else b""
        if len(body) != len(header) + channels * resolution * resolution or not body.startswith(header):
            raise ValueError(f"{image_format} image holds {len(body)} bytes, shards promise {channels}x{resolution}x"
                             f"{resolution} = {channels * resolution * resolution}"
                             + (f" after a {len(header)}-byte header" if header else ""))
        return np.frombuffer(body, dtype=np.uint8, offset=len(header)).reshape(promised)
    if image_format == "png":
        with Image.open(io.BytesIO(body)) as image:
            array = np.asarray(image)
        array = array[:, :, None] if array.ndim == 2 else array
        if array.shape != (resolution, resolution, channels):
            raise ValueError(f"image is {array.shape}, shards promise {(resolution, resolution, channels)}")
        return np.ascontiguousarray(array.transpose(2, 0, 1))
    raise ValueError(f"unknown image format {image_format!r} (known: {', '.join(IMAGE_FORMATS)})")


@dataclass(frozen=True)
class ImageSpec:
    """How to turn one WebDataset sample of a shard set into (image, label) (from the manifest).

    Our shards hold {key}.{image_format} at exactly resolution x resolution x channels and {key}.cls. An indexed set
    (`fitted`) holds whatever other tools wrote: one image member of any of foreign.IMAGE_EXTENSIONS at any size,
    converted and resized here, and labels from `label_source` mapped onto `label_values`' positions."""

    resolution: int
    channels: int
    image_format: str
    fitted: bool = False
    label_source: str = "cls"
    label_values: tuple[str, ...] = ()

    def decode(self, body: bytes) -> np.ndarray:
        return decode_image(body, self.image_format, self.resolution, self.channels)

    def decode_sample(self, sample: dict) -> tuple[np.ndarray, int]:
        """(C, H, W) uint8 and the class index (-1: none); ValueError naming what the sample lacks."""
        if self.fitted:
            _, body = foreign.image_member(sample)
            return (foreign.fit_image(body, self.resolution, self.channels),
                    foreign.label_index(sample, self.label_source, self.label_values))
        try:
            body = sample[self.image_format]
        except KeyError:
            members = ", ".join(k for k in sample if not k.startswith("__"))
            raise ValueError(f"has no .{self.image_format} member (has: {members}), though shards.json says "
                             f"image_format {self.image_format}; rebuild the shards with jobs.make_shards") from None
        return self.decode(body), int(sample.get("cls", b"-1"))
