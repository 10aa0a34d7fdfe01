"""A folder of real photos-like JPEGs for the folder-build tests: the digits, tinted, in three class folders."""
from pathlib import Path

import numpy as np
from PIL import Image

from gan.shards.sources import load_digits


def write_photo_folder(folder: Path, count: int = 600) -> Path:
    """`count` 48x40 RGB JPEGs (resized and cropped to 32x32 when sharded) and one file that is not an image."""
    digits = load_digits(48, 3)
    for index in range(count):
        tint = np.array([1.0, 0.5 + (index % 7) / 14, 1.0 - (index % 5) / 10])
        image = Image.fromarray((digits.images[index] * tint).astype(np.uint8)).crop((0, 4, 48, 44))
        (folder / f"class{index % 3}").mkdir(parents=True, exist_ok=True)
        image.save(folder / f"class{index % 3}" / f"{index:04d}.jpg", quality=90)
    (folder / "class1" / "broken.jpg").write_bytes(b"not a jpeg")
    return folder
