"""Writes an ImageSet as WebDataset tar shards ({split}-000000.tar ...) plus the manifest that describes them.

Each sample is two tar members, {key}.{raw|png} (gan/image_codec.py) and {key}.cls.
"""
from __future__ import annotations

import hashlib
import io
import tarfile
from typing import Iterable

import numpy as np
from tqdm import tqdm

from gan import storage
from gan.image_codec import encode_image
from gan.manifest import Manifest, ManifestError, ShardInfo, read_manifest, write_manifest
from gan.sources import ImageSet


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


def split_indices(count: int, holdout_fraction: float, seed: int,
                  holdout: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Train and holdout image indices: the source's own split when it has one (MNIST's test set), else a seeded
    random `holdout_fraction`."""
    if holdout is not None:
        return {"train": np.flatnonzero(~holdout), "holdout": np.flatnonzero(holdout)}
    order = np.random.default_rng(seed).permutation(count)
    holdout = int(round(count * holdout_fraction))
    return {"train": np.sort(order[holdout:]), "holdout": np.sort(order[:holdout])}


def write_shards(data: ImageSet, out: str, samples_per_shard: int, holdout_fraction: float, seed: int,
                 image_format: str = "raw") -> Manifest:
    """Write every split's shards, then the manifest last, so a manifest only ever names complete shards."""
    height, _, channels = data.images.shape[1:]
    manifest = Manifest(resolution=height, channels=channels, class_names=data.class_names, source=data.source,
                        image_format=image_format)
    total = len(data.images)
    with tqdm(total=total, desc=f"writing shards to {out}", unit="img") as progress:
        for split, indices in split_indices(total, holdout_fraction, seed, data.holdout).items():
            shards = []
            for number, start in enumerate(range(0, len(indices), samples_per_shard)):
                chunk = indices[start:start + samples_per_shard]
                name = f"{split}-{number:06d}.tar"
                body = tar_bytes((f"{split}-{i:07d}", image_format, encode_image(data.images[i], image_format),
                                  data.labels[i]) for i in chunk)
                storage.write_bytes(storage.join(out, name), body)
                shards.append(ShardInfo(name=name, samples=len(chunk), sha256=hashlib.sha256(body).hexdigest()))
                progress.update(len(chunk))
            if shards:
                manifest.splits[split] = shards
    write_manifest(out, manifest)
    return manifest


def copy_shards(source: str, out: str) -> Manifest:
    """Copy a shard set (e.g. a local folder to s3://), verifying every shard's sha256; the manifest goes last."""
    manifest = read_manifest(source)
    shards = [shard for split in manifest.splits.values() for shard in split]
    for shard in tqdm(shards, desc=f"copying shards to {out}", unit="shard"):
        body = storage.read_bytes(storage.join(source, shard.name))
        if hashlib.sha256(body).hexdigest() != shard.sha256:
            raise ManifestError(f"{storage.join(source, shard.name)} does not match the sha256 in its manifest; "
                                f"rebuild the shards with jobs.make_shards")
        storage.write_bytes(storage.join(out, shard.name), body)
    write_manifest(out, manifest)
    return manifest
