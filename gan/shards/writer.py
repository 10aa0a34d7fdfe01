"""Writes an ImageSet as WebDataset tar shards ({split}-000000.tar ...) plus the manifest that describes them.

Each sample is two tar members, {key}.{npy|png|raw} (gan/shards/image_codec.py) and {key}.cls. Every split is written
in a seeded random order, whatever order the source lists its images in (a class folder lists them class by class),
so each shard holds about its split's class mix; shards.json records each shard's class histogram.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import tarfile
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from tqdm import tqdm

from gan.shards import storage
from gan.shards.class_mix import class_histogram
from gan.shards.image_codec import encode_image
from gan.shards.manifest import Manifest, ManifestError, ShardInfo, read_manifest, write_manifest
from gan.shards.sources import ImageSet


def tar_bytes(samples: Iterable[tuple[str, str, bytes, int]]) -> bytes:
    """A WebDataset shard from (key, image suffix, image bytes, label) per sample: members {key}.{suffix} and
    {key}.cls. Plain USTAR headers, because the PAX headers tarfile writes by default double the header parsing the
    reader pays for every sample."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, suffix, image, label in samples:
            for name, body in ((f"{key}.{suffix}", image), (f"{key}.cls", str(int(label)).encode())):
                member = tarfile.TarInfo(name)
                member.size, member.mode = len(body), 0o444
                tar.addfile(member, io.BytesIO(body))
    return buffer.getvalue()


# Shard sizes when none is given: up to DEFAULT_SHARD_SAMPLES, but a train split smaller than MIN_TRAIN_SHARDS
# such shards is cut into MIN_TRAIN_SHARDS smaller ones, so a small set still feeds every rank and loader process
# of a modest cluster (400 images: 16 shards of 23, not one of 400).
DEFAULT_SHARD_SAMPLES = 1000
MIN_TRAIN_SHARDS = 16
SKIPPED_FILES = "unreadable-files.txt"  # beside the shards: each source file the build could not decode, and why


def split_indices(count: int, holdout_fraction: float, seed: int,
                  holdout: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Train and holdout image indices, each split in a seeded random order: the source's own split when it has one
    (MNIST's test set), else a seeded random `holdout_fraction`."""
    rng = np.random.default_rng(seed)
    if holdout is not None:
        return {"train": rng.permutation(np.flatnonzero(~holdout)), "holdout": rng.permutation(np.flatnonzero(holdout))}
    order = rng.permutation(count)
    holdout = int(round(count * holdout_fraction))
    return {"train": order[holdout:], "holdout": order[:holdout]}


def shard_size(split: str, count: int, samples_per_shard: int) -> int:
    """Samples per shard of a split: `samples_per_shard` when given (> 0), else the default for its size."""
    if samples_per_shard:
        return samples_per_shard
    if split != "train":
        return DEFAULT_SHARD_SAMPLES
    return max(1, min(DEFAULT_SHARD_SAMPLES, -(-count // MIN_TRAIN_SHARDS)))


@dataclass(frozen=True)
class ShardPlan:
    """One shard to write: its split, file name and the ImageSet indices it holds, in order."""

    split: str
    name: str
    indices: np.ndarray


def plan_shards(data: ImageSet, samples_per_shard: int, holdout_fraction: float, seed: int) -> list[ShardPlan]:
    """Every shard of the set, split by split; the same data, sizes and seed always give the same plan."""
    plans = []
    for split, indices in split_indices(len(data.images), holdout_fraction, seed, data.holdout).items():
        size = shard_size(split, len(indices), samples_per_shard)
        for number, start in enumerate(range(0, len(indices), size)):
            plans.append(ShardPlan(split, f"{split}-{number:06d}.tar", indices[start:start + size]))
    return plans


def write_shard(out: str, plan: ShardPlan, images: np.ndarray, labels: np.ndarray, image_format: str,
                num_classes: int) -> ShardInfo:
    """Encode and write one whole shard; `images` and `labels` are the plan's, in its order."""
    body = tar_bytes((f"{plan.split}-{i:07d}", image_format, encode_image(image, image_format), label)
                     for i, image, label in zip(plan.indices, images, labels))
    storage.write_bytes(storage.join(out, plan.name), body)
    return ShardInfo(name=plan.name, samples=len(plan.indices), sha256=hashlib.sha256(body).hexdigest(),
                     classes=class_histogram(labels, num_classes))


def new_manifest(data: ImageSet, image_format: str) -> Manifest:
    height, _, channels = data.images.shape[1:]
    return Manifest(resolution=height, channels=channels, class_names=data.class_names, source=data.source,
                    image_format=image_format)


def finish_manifest(out: str, manifest: Manifest, plans: list[ShardPlan], written: list[ShardInfo]) -> Manifest:
    """The manifest, written last, so that it only ever names complete shards."""
    for plan, shard in zip(plans, written, strict=True):
        manifest.splits.setdefault(plan.split, []).append(shard)
    write_manifest(out, manifest)
    return manifest


def write_shards(data: ImageSet, out: str, samples_per_shard: int, holdout_fraction: float, seed: int,
                 image_format: str = "npy") -> Manifest:
    """Write every split's shards in this process, then the manifest (gan/shards/parallel.py spreads the same
    plan over Ray tasks)."""
    plans = plan_shards(data, samples_per_shard, holdout_fraction, seed)
    written = []
    with tqdm(total=len(data.images), desc=f"writing shards to {out}", unit="img") as progress:
        for plan in plans:
            written.append(write_shard(out, plan, data.images[plan.indices], data.labels[plan.indices],
                                       image_format, len(data.class_names)))
            progress.update(len(plan.indices))
    return finish_manifest(out, new_manifest(data, image_format), plans, written)


def copy_shards(source: str, out: str) -> Manifest:
    """Copy a shard set (e.g. a local folder to s3://), verifying every shard's sha256; the manifest goes last. The
    set's cached quality reference goes along when there is one, so runs on the copy do not train it again."""
    manifest = read_manifest(source)
    if manifest.indexed:
        raise ManifestError(f"{source} indexes shards where other tools wrote them ({manifest.source}); copy those "
                            f"with your object store's tools and index the copy with jobs.make_shards --index")
    shards = [shard for split in manifest.splits.values() for shard in split]
    for shard in tqdm(shards, desc=f"copying shards to {out}", unit="shard"):
        body = storage.read_bytes(storage.join(source, shard.name))
        if hashlib.sha256(body).hexdigest() != shard.sha256:
            raise ManifestError(f"{storage.join(source, shard.name)} does not match the sha256 in its manifest; "
                                f"rebuild the shards with jobs.make_shards")
        storage.write_bytes(storage.join(out, shard.name), body)
    with contextlib.suppress(FileNotFoundError):
        storage.write_bytes(storage.join(out, manifest.reference_name),
                            storage.read_bytes(storage.join(source, manifest.reference_name)))
    write_manifest(out, manifest)
    return manifest
