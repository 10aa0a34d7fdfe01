"""shards.json: what a shard set holds (image shape, classes, per-shard counts and sha256) and its version hash.

A set is either written by jobs.make_shards (shards beside shards.json, images stored at the training shape) or
indexed (gan/shards/index.py): shards that other tools wrote, named by URL where they live, their images decoded and
fitted to `resolution` x `channels` at load time."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from gan.shards import storage
from gan.shards.foreign import IMAGE_EXTENSIONS
from gan.shards.image_codec import IMAGE_FORMATS, ImageSpec

MANIFEST_NAME = "shards.json"
FORMAT_VERSION = 1


class ManifestError(ValueError):
    """The shard set is missing or does not fit the job; the message says which and how to fix it."""


@dataclass(frozen=True)
class ShardInfo:
    name: str  # relative to shards.json's folder, or a whole URL (an indexed set's shards that live elsewhere)
    samples: int
    sha256: str
    # Samples per class index (Manifest.class_names), so a trainer can see unmixed shards without reading them;
    # None in manifests written before histograms were recorded.
    classes: tuple[int, ...] | None = None


@dataclass
class Manifest:
    resolution: int
    channels: int
    class_names: list[str]
    splits: dict[str, list[ShardInfo]] = field(default_factory=dict)
    image_format: str = "png"  # gan/shards/image_codec.py; manifests from before raw storage existed are all png
    source: str = ""
    format_version: int = FORMAT_VERSION
    # Indexed sets only: image_format is the image extensions found ("jpg", "jpg,png"); labels are read from
    # label_source (cls, json:FIELD, none) and class i is label_values[i]; small_images were upscaled to fit.
    indexed: bool = False
    label_source: str = "cls"
    label_values: list[str] = field(default_factory=list)
    small_images: int = 0

    @property
    def dataset_hash(self) -> str:
        """Changes whenever any shard's bytes change: versions caches built from this set (e.g. real statistics)."""
        digest = hashlib.sha256()
        for split in sorted(self.splits):
            for shard in self.splits[split]:
                digest.update(f"{split}/{shard.name}:{shard.sha256}\n".encode())
        if self.indexed:  # the same bytes give other images at another size, channel count or label source
            digest.update(f"indexed {self.resolution}x{self.channels} labels {self.label_source}\n".encode())
        return digest.hexdigest()[:16]

    @property
    def reference_name(self) -> str:
        """The file beside the shards that caches this set's quality reference (gan/metrics/classifier.py): keyed
        by the data set's hash, so it is valid wherever the same shards are."""
        return f"quality-{self.dataset_hash}.pt"

    @property
    def image_spec(self) -> ImageSpec:
        return ImageSpec(self.resolution, self.channels, self.image_format, self.indexed, self.label_source,
                         tuple(self.label_values))

    def shards(self, split: str) -> list[ShardInfo]:
        if split not in self.splits or not self.splits[split]:
            raise ManifestError(f"shard set has no {split!r} split (has: {', '.join(self.splits) or 'none'}); "
                                f"rebuild it with jobs.make_shards")
        return self.splits[split]

    def sample_count(self, split: str) -> int:
        return sum(shard.samples for shard in self.shards(split))

    def to_json(self) -> str:
        body = asdict(self)
        body["dataset_hash"] = self.dataset_hash
        return json.dumps(body, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        body = json.loads(text)
        body.pop("dataset_hash", None)
        if body.get("format_version") != FORMAT_VERSION:
            raise ManifestError(f"{MANIFEST_NAME} has format_version {body.get('format_version')}, this code reads "
                                f"{FORMAT_VERSION}; rebuild the shards with jobs.make_shards")
        known = IMAGE_EXTENSIONS if body.get("indexed") else IMAGE_FORMATS
        if not set(body.get("image_format", "png").split(",")) <= set(known):
            raise ManifestError(f"{MANIFEST_NAME} stores images as {body['image_format']!r}, this code reads "
                                f"{', '.join(known)}; rebuild the shards with jobs.make_shards")
        body["splits"] = {split: [_shard_info(s) for s in shards] for split, shards in body["splits"].items()}
        return cls(**body)


def _shard_info(body: dict) -> ShardInfo:
    classes = body.pop("classes", None)
    return ShardInfo(**body, classes=None if classes is None else tuple(classes))


def shard_location(root: str, shard: ShardInfo) -> str:
    """Where a shard is: its name under the manifest's folder, or the URL an index recorded."""
    return shard.name if "://" in shard.name or shard.name.startswith("/") else storage.join(root, shard.name)


def write_manifest(root: str, manifest: Manifest) -> None:
    storage.write_bytes(storage.join(root, MANIFEST_NAME), manifest.to_json().encode())


def read_manifest(root: str) -> Manifest:
    location = storage.join(root, MANIFEST_NAME)
    try:
        text = storage.read_bytes(location).decode()
    except FileNotFoundError:
        raise ManifestError(f"no {MANIFEST_NAME} at {location}: point --shards at a folder made by "
                            f"`python -m jobs.make_shards --out {root}` (or run that first)") from None
    try:
        return Manifest.from_json(text)
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ManifestError(f"{location} is not a valid manifest ({error}); rebuild it with jobs.make_shards") from None
