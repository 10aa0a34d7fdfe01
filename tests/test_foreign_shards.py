"""WebDataset shards that other tools wrote, indexed where they are and decoded at load time; and ours, read by plain
WebDataset. The end-to-end cases write three foreign layouts with webdataset.ShardWriter into SeaweedFS, index and
train on each, and check that no shard object changed."""
import io
import json
import subprocess
import sys
import tarfile
import uuid

import boto3
import numpy as np
import pytest
import webdataset as wds
from mlflow import MlflowClient
from PIL import Image

from gan.shards.batches import rank_samples
from gan.shards.foreign import fit_image
from gan.shards.index import IndexingError, build_index
from gan.shards.manifest import read_manifest
from gan.shards.reader import DataError, DataHealth, ReadPolicy
from gan.shards.sources import _to_array, load_digits
from jobs import make_shards
from tests.helpers import BUCKET, REPO, clean_env, metric_values


def _encoded(image: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buffer, format=image_format, quality=90)
    return buffer.getvalue()


def _write_foreign(pattern: str, samples) -> None:
    """Samples (dicts of members) through webdataset.ShardWriter, 300 a shard, as another team's pipeline writes."""
    with wds.ShardWriter(pattern, maxcount=300, verbose=0) as writer:
        for sample in samples:
            writer.write(sample)


def _jpg_cls(digits, size: int = 96):
    """jpg + cls at `size` px, in class order: shards of one or two classes, the worst order a pipeline writes."""
    for rank, index in enumerate(np.argsort(digits.labels, kind="stable")):
        yield {"__key__": f"{rank:06d}", "jpg": _encoded(digits.images[index][:size, :size], "JPEG"),
               "cls": int(digits.labels[index])}


def _webp_json(digits):
    """webp, 96x80 (the centre square is used), with the class as a word in a .json field."""
    names = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    for index, (image, label) in enumerate(zip(digits.images, digits.labels)):
        yield {"__key__": f"{index:06d}", "webp": _encoded(image[8:88], "WEBP"),
               "json": json.dumps({"label": names[label], "source": "scanner"}).encode()}


def _img2dataset(digits):
    """img2dataset's layout: {key}.jpg, a caption in {key}.txt and its record in {key}.json; no class labels."""
    for index, image in enumerate(digits.images):
        key = f"{index // 300:05d}{index % 300:04d}"
        yield {"__key__": key, "jpg": _encoded(image, "JPEG"), "txt": b"a handwritten digit",
               "json": json.dumps({"key": key, "status": "success", "url": f"http://example.com/{key}.jpg",
                                   "caption": "a handwritten digit", "width": 96, "height": 96}).encode()}


# --- ours, read by plain WebDataset -----------------------------------------------------------------------------


def test_our_shards_open_with_plain_webdataset_and_its_standard_decoders(digits_shards, tmp_path):
    manifest = read_manifest(str(digits_shards))
    assert manifest.image_format == "npy"  # make_shards' default
    ours = {key: (image, label) for image, label, key in rank_samples(
        str(digits_shards), tuple(manifest.shards("train")[:1]), manifest.image_spec, 1, 0)}
    plain = list(wds.WebDataset(str(digits_shards / manifest.shards("train")[0].name), shardshuffle=False).decode())
    assert len(plain) == len(ours) == manifest.shards("train")[0].samples
    for sample in plain:
        image, label = ours[sample["__key__"]]
        assert isinstance(sample["cls"], int) and sample["cls"] == label
        assert np.array_equal(sample["npy"], image)  # (C, H, W) uint8, as numpy.load reads it
    # PNG shards open with WebDataset's PIL decoder.
    make_shards.main(["--dataset", "digits", "--image-format", "png", "--out", str(tmp_path / "png")])
    png = read_manifest(str(tmp_path / "png"))
    first = next(iter(wds.WebDataset(str(tmp_path / "png" / png.shards("train")[0].name), shardshuffle=False)
                      .decode("pil")))
    assert isinstance(first["png"], Image.Image) and first["png"].size == (32, 32) and 0 <= first["cls"] <= 9


# --- decoding and fitting ---------------------------------------------------------------------------------------


def test_a_large_jpeg_is_decoded_reduced_and_fitted_like_a_full_decode():
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (24, 32, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # 192x256
    body = _encoded(smooth, "JPEG")
    fitted = fit_image(body, 64, 3)
    assert fitted.shape == (3, 64, 64) and fitted.dtype == np.uint8
    full = Image.open(io.BytesIO(body)).convert("RGB").crop((32, 0, 224, 192)).resize((64, 64),
                                                                                      Image.Resampling.BICUBIC)
    # Decoding at a quarter of the size (libjpeg's DCT scaling) changes pixels by a few grey levels, not the image.
    assert np.abs(fitted.transpose(1, 2, 0).astype(int) - np.asarray(full, int)).mean() < 6
    assert fit_image(body, 32, 1).shape == (1, 32, 32)


def test_an_image_a_little_smaller_than_the_side_is_padded_at_its_own_scale_and_a_much_smaller_one_upscaled():
    digit = np.zeros((28, 30), np.uint8)  # an MNIST-sized digit on black, one column wider: the centre square is cut
    digit[6:22, 10:19] = 255
    square = digit[:, 1:29]
    indexed = fit_image(_encoded(digit[..., None], "PNG"), 32, 1)[0]  # what the loader does with indexed shards
    folder = _to_array(Image.fromarray(digit), 32, 1)[..., 0]  # what make_shards --from-folder writes
    for fitted in (indexed, folder):
        assert fitted.shape == (32, 32) and np.array_equal(fitted[2:30, 2:30], square)  # not resampled
        assert not fitted[:2].any() and not fitted[:, 30:].any()  # the border repeats the black edge
    tiny = np.zeros((8, 8), np.uint8)
    tiny[2:6, 3:5] = 255
    upscaled = fit_image(_encoded(tiny[..., None], "PNG"), 32, 1)[0]  # 8 of 32 px: a picture, not a dot in a frame
    assert (upscaled > 128).sum() > 8 * 12  # its 8 lit pixels, each scaled 4 x 4 (minus the resampled edges)


# --- bad foreign data: named errors -------------------------------------------------------------------------------


def _tar(path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return str(path)


@pytest.mark.parametrize("members, labels, problem", [
    ({"a.txt": b"caption", "a.cls": b"1"}, "auto", "has no image member (has: cls, txt"),
    ({"a.jpg": b"x", "a.png": b"y", "a.cls": b"1"}, "auto", "has 2 image members (jpg, png)"),
    ({"a.jpg": None, "a.json": b'{"caption": "x"}'}, "json:label", "its .json has no field 'label' (has: caption)"),
    ({"a.jpg": b"not a jpeg", "a.cls": b"1"}, "auto", "its .jpg is not a readable image"),
])
def test_bad_foreign_samples_are_named_errors(tmp_path, members, labels, problem):
    jpeg = _encoded(np.zeros((40, 40, 3), np.uint8), "JPEG")
    for number in range(2):
        _tar(tmp_path / f"s-{number}.tar", {name: body or jpeg for name, body in members.items()})
    with pytest.raises(IndexingError) as error:
        build_index(str(tmp_path / "s-{0..1}.tar"), str(tmp_path), 32, 1, labels)
    assert problem in str(error.value) and "s-0.tar" in str(error.value) and "'a'" in str(error.value)


def test_images_smaller_than_the_resolution_are_counted_and_upscaled_or_refused_under_strict(tmp_path, capsys):
    digits = load_digits(48, 3)
    _write_foreign(str(tmp_path / "small-%06d.tar"), _jpg_cls(digits, size=48))
    pattern = str(tmp_path / "small-{000000..000005}.tar")
    assert make_shards.main(["--index", pattern, "--resolution", "64", "--strict", "--out", str(tmp_path / "a")]) == 2
    assert "1797 images are smaller than --resolution 64 px" in capsys.readouterr().err
    assert make_shards.main(["--index", pattern, "--resolution", "64", "--out", str(tmp_path / "b")]) == 0
    assert "1797 images are smaller than 64 px and will be upscaled" in capsys.readouterr().err
    manifest = read_manifest(str(tmp_path / "b"))
    image, _, _ = next(iter(rank_samples(str(tmp_path / "b"), tuple(manifest.shards("holdout")), manifest.image_spec,
                                         1, 0)))
    assert manifest.small_images == 1797 and image.shape == (1, 64, 64)


def test_a_pattern_that_matches_nothing_on_s3_is_named_with_what_is_there(s3_env):
    with pytest.raises(IndexingError, match=r"matches none of the \d+ objects under s3://dcgan/nowhere-"):
        build_index(f"s3://{BUCKET}/nowhere-{uuid.uuid4().hex[:6]}/train-{{000000..000127}}.tar", "unused", 32, 1)


def test_an_indexed_shard_cut_short_later_is_counted_as_bad_or_fatal_under_strict(tmp_path):
    _write_foreign(str(tmp_path / "d-%06d.tar"), _jpg_cls(load_digits(32, 1), size=32))
    manifest = build_index(str(tmp_path / "d-{000000..000005}.tar"), str(tmp_path), 32, 1)
    shard = manifest.shards("train")[0]
    with tarfile.open(tmp_path / shard.name) as tar:  # the first 100 samples' members, a valid tar
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()][:200]
    with tarfile.open(tmp_path / shard.name, "w") as tar:
        for member, body in members:
            tar.addfile(member, io.BytesIO(body))
    health = DataHealth()
    keys = [key for _, _, key in rank_samples(str(tmp_path), (shard,), manifest.image_spec, 1, 0, health)]
    assert len(keys) == 100 and health.bad_shards == 1 and health.skipped_samples == shard.samples - 100
    with pytest.raises(DataError, match=f"bad shard .*{shard.name}: holds 100 samples, the manifest says 300"):
        list(rank_samples(str(tmp_path), (shard,), manifest.image_spec, 1, 0, DataHealth(), ReadPolicy(strict=True)))


def test_the_holdout_is_whole_shards_seeded_or_named_and_never_shared(tmp_path):
    digits = load_digits(32, 1)
    _write_foreign(str(tmp_path / "d-%06d.tar"), _jpg_cls(digits, size=32))
    pattern = str(tmp_path / "d-{000000..000005}.tar")
    seeded = build_index(pattern, str(tmp_path / "seeded"), 32, 1, holdout_fraction=0.3)
    assert [len(seeded.shards(split)) for split in ("train", "holdout")] == [4, 2]
    assert seeded.sample_count("train") + seeded.sample_count("holdout") == 1797
    named = build_index(str(tmp_path / "d-{000000..000004}.tar"), str(tmp_path / "named"), 32, 1,
                        holdout_pattern=str(tmp_path / "d-000005.tar"))
    assert [shard.name for shard in named.shards("holdout")] == [str(tmp_path / "d-000005.tar")]  # lives elsewhere
    with pytest.raises(IndexingError, match="share shards"):
        build_index(pattern, str(tmp_path / "x"), 32, 1, holdout_pattern=str(tmp_path / "d-000005.tar"))
    with pytest.raises(IndexingError, match="one shard cannot be split"):
        build_index(str(tmp_path / "d-000000.tar"), str(tmp_path / "y"), 32, 1)


@pytest.mark.slow
def test_ray_tasks_index_the_same_set_as_one_process(local_ray, tmp_path):
    _write_foreign(str(tmp_path / "d-%06d.tar"), _webp_json(load_digits(32, 3)))
    pattern = str(tmp_path / "d-{000000..000005}.tar")
    alone = build_index(pattern, str(tmp_path / "alone"), 32, 3, "json:label")
    spread = build_index(pattern, str(tmp_path / "spread"), 32, 3, "json:label", tasks=3)
    assert spread.dataset_hash == alone.dataset_hash and spread.splits == alone.splits
    assert spread.class_names == sorted(spread.class_names) and "three" in spread.class_names


# --- end to end on SeaweedFS ----------------------------------------------------------------------------------------

LAYOUTS = {
    # layout: (how samples are made, make_shards flags beyond --index, the labels the index must find)
    "jpg-cls-96px": (_jpg_cls, ["--channels", "3"], "cls"),
    "webp-json-label": (_webp_json, ["--labels", "json:label", "--holdout", "HOLDOUT"], "json:label"),
    "img2dataset": (_img2dataset, ["--channels", "3"], "none"),
}
TRAIN = ["--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "16", "--g-features", "8", "--d-features", "8",
         "--latent-dim", "16", "--quality-every", "1", "--quality-samples", "200", "--max-failures", "0"]


def _etags(client, prefix: str) -> dict[str, str]:
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {item["Key"]: item["ETag"] for item in listing if item["Key"].endswith(".tar")}


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_foreign_shards_on_s3_are_indexed_and_trained_on_without_a_shard_rewritten(layout, s3_env, tmp_path):
    make, flags, labels = LAYOUTS[layout]
    client = boto3.client("s3", endpoint_url=s3_env.url, region_name="us-east-1",
                          aws_access_key_id=s3_env.env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=s3_env.env["AWS_SECRET_ACCESS_KEY"])
    prefix = f"foreign-{layout}-{uuid.uuid4().hex[:6]}"
    _write_foreign(str(tmp_path / "train-%06d.tar"), make(load_digits(96, 3)))
    for path in sorted(tmp_path.glob("train-*.tar")):  # the last shard stands apart as a named holdout
        name = "val-000000.tar" if path.name == "train-000005.tar" and "HOLDOUT" in flags else path.name
        client.upload_file(str(path), BUCKET, f"{prefix}/{name}")
    if layout == "img2dataset":  # its per-shard statistics sit beside the shards and are not shards
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/00000_stats.json", Body=b'{"successes": 300}')
    before = _etags(client, prefix)
    last = 4 if "HOLDOUT" in flags else 5
    flags = [f if f != "HOLDOUT" else f"s3://{BUCKET}/{prefix}/val-000000.tar" for f in flags]
    index = f"s3://{BUCKET}/{prefix}-index" if "--holdout" in flags else f"s3://{BUCKET}/{prefix}"  # read-only case
    env = {**clean_env(), **s3_env.env}
    made = subprocess.run([sys.executable, "-m", "jobs.make_shards", "--index",
                           f"s3://{BUCKET}/{prefix}/train-{{000000..{last:06d}}}.tar", "--out", index, *flags],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    assert "no shard was rewritten" in made.stdout
    manifest = read_manifest(index)
    assert manifest.indexed and manifest.label_source == labels and manifest.sample_count("holdout") > 0
    assert len(manifest.class_names) == (1 if labels == "none" else 10)

    result = subprocess.run([sys.executable, "-m", "jobs.train", "--shards", index, *TRAIN,
                             "--tracking-uri", f"sqlite:///{tmp_path / 'mlruns.db'}",
                             "--artifact-root", str(tmp_path / "mlartifacts"), "--storage-path", str(tmp_path / "ray")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    if layout == "jpg-cls-96px":  # written class by class: the index and the preflight say so before training
        assert "the holdout's class mix differs" in made.stderr and "are not mixed" in result.stderr
    mlflow = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    (run,) = mlflow.search_runs([mlflow.get_experiment_by_name("dcgan").experiment_id])
    assert run.data.params["data.indexed"] == "True" and run.data.params["data.labels"] == labels
    assert run.data.params["data.dataset_hash"] == manifest.dataset_hash
    for key in ("quality/fid_domain", "quality/fid_domain_floor", "quality/precision", "quality/recall"):
        assert metric_values(mlflow, run.info.run_id, key), key
    assert run.data.metrics["data/bad_shards"] == 0 and run.data.metrics["data/skipped_samples"] == 0
    assert _etags(client, prefix) == before  # every shard object is as it was written
