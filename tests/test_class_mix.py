"""A class folder listed class by class still makes shards and batches that mix, as the packaged sets' do; shards
that do not mix (written before, or by other tools) are named before training, and refused under --strict."""
import json

import numpy as np
import pytest

from gan.config import TrainConfig
from gan.run.preflight import check_class_mix
from gan.shards.batches import plan_epoch, rank_batches
from gan.shards.class_mix import class_histogram, class_mix
from gan.shards.manifest import MANIFEST_NAME, ManifestError, read_manifest
from gan.shards.sources import load_folder
from gan.shards.writer import write_shards
from bench.batch_mix import batch_mix as measured_batch_mix
from jobs import make_shards
from tests.helpers import export_digits, write_unshuffled_shards


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    """The 1,797 digits as a user's folder: 8x8 PNGs, one sub-folder per class, listed class by class."""
    return export_digits(tmp_path_factory.mktemp("digits-folder"), layout="classes")


@pytest.fixture(scope="module")
def folder_shards(class_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("folder-shards")
    write_shards(load_folder(str(class_folder), 32, 1), str(out), samples_per_shard=0, holdout_fraction=0.1, seed=0)
    return out


def batch_mix(shards) -> tuple[float, float]:
    """Over rank 0's first epoch of a 2-rank run at batch 32: the largest class's mean share of a batch, and the mean
    number of classes a batch holds. The shuffle buffer holds one shard, as the default 1,000 holds one of MNIST's."""
    return measured_batch_mix(str(shards), batches=1000, shuffle_buffer=100)


def test_a_class_folder_listed_class_by_class_makes_shards_that_each_hold_most_classes(folder_shards):
    manifest = read_manifest(str(folder_shards))
    for split in ("train", "holdout"):
        for shard in manifest.shards(split):
            assert sum(count > 0 for count in shard.classes) >= 8, (split, shard)
    # The histograms are what the shards hold: the labels read back from every train shard.
    labels = [label for _, labels in rank_batches(str(folder_shards), plan_epoch(manifest.shards("train"), 1, 1, 0, 0),
                                                  0, manifest.image_spec, 1, 0) for label in labels.tolist()]
    assert tuple(np.sum([s.classes for s in manifest.shards("train")], axis=0)) == class_histogram(np.array(labels), 10)
    assert not class_mix(manifest.shards("train")).skewed


def test_a_rank_s_batches_from_a_class_folder_mix_as_well_as_the_packaged_set_s(class_folder, folder_shards,
                                                                                digits_shards, tmp_path):
    folder_share, folder_classes = batch_mix(folder_shards)
    packaged_share, packaged_classes = batch_mix(digits_shards)
    assert folder_share <= packaged_share * 1.15 and folder_classes >= packaged_classes - 0.5
    # The measure tells: the same images in class order (as the writer used to put them) give one-class batches.
    sorted_share, sorted_classes = batch_mix(write_unshuffled_shards(load_folder(str(class_folder), 32, 1),
                                                                     tmp_path / "sorted"))
    assert sorted_share > 2 * folder_share and sorted_classes < folder_classes / 2


def test_shards_in_class_order_are_named_before_training_and_refused_under_strict(class_folder, tmp_path, capsys):
    shards = write_unshuffled_shards(load_folder(str(class_folder), 32, 1), tmp_path / "sorted")
    manifest = read_manifest(str(shards))
    mix = class_mix(manifest.shards("train"))
    assert mix.skewed and mix.fewest_classes <= 2
    facts = check_class_mix(TrainConfig(shards=str(shards)), manifest)
    warning = capsys.readouterr().err
    assert "are not mixed" in warning and "Rebuild them with jobs.make_shards" in warning
    assert facts["data.class_mix"].startswith(f"{mix.mean_distance:.3f}")
    with pytest.raises(ManifestError, match="not mixed"):
        check_class_mix(TrainConfig(shards=str(shards), strict=True), manifest)


def test_an_old_manifest_without_histograms_loads_and_says_its_mix_is_unknown(folder_shards, tmp_path, capsys):
    body = json.loads((folder_shards / MANIFEST_NAME).read_text())
    for shards in body["splits"].values():
        for shard in shards:
            del shard["classes"]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(body))
    manifest = read_manifest(str(tmp_path))
    assert manifest.dataset_hash == read_manifest(str(folder_shards)).dataset_hash
    assert class_mix(manifest.shards("train")) is None
    assert check_class_mix(TrainConfig(shards=str(tmp_path)), manifest) == {}
    assert "before shards.json recorded class histograms" in capsys.readouterr().err


def test_make_shards_names_the_files_it_could_not_read_and_where_the_full_list_is(class_folder, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index, source in enumerate(sorted((class_folder / "class_3").glob("*.png"))[:40]):
        (folder / f"{index:03d}.png").write_bytes(source.read_bytes())
    for index in range(5):
        (folder / f"broken-{index}.jpg").write_bytes(b"not an image")
    assert make_shards.main(["--from-folder", str(folder), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    listing = tmp_path / "out" / "unreadable-files.txt"
    assert f"skipped 5 unreadable image files in {folder} (all listed in {listing})" in printed
    named = [line for line in printed.splitlines() if line.startswith(f"  {folder / 'broken-'}")]
    assert len(named) == make_shards.SHOWN_SKIPS and all("cannot identify image file" in line for line in named)
    assert sorted(line.split(":")[0] for line in listing.read_text().splitlines()) == [
        str(folder / f"broken-{index}.jpg") for index in range(5)]
