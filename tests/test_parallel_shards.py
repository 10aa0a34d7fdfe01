"""`make_shards --from-folder --tasks N`: the same shard set, byte for byte, as the one-process build."""
import subprocess
import sys

import pytest

from gan.shards import storage
from gan.shards.manifest import read_manifest
from gan.shards.sources import load_folder
from gan.shards.writer import write_shards
from tests.helpers import REPO, clean_env
from tests.photos import write_photo_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    return write_photo_folder(tmp_path_factory.mktemp("photos"))


def test_ray_tasks_write_the_same_shards_as_one_process(photo_folder, tmp_path):
    single = tmp_path / "single"
    data = load_folder(str(photo_folder), 32, 3)
    expected = write_shards(data, str(single), samples_per_shard=64, holdout_fraction=0.1, seed=3)
    parallel = tmp_path / "parallel"
    result = subprocess.run([sys.executable, "-m", "jobs.make_shards", "--from-folder", str(photo_folder), "--tasks",
                             "2", "--out", str(parallel), "--samples-per-shard", "64", "--channels", "3", "--seed",
                             "3"], cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped 1 unreadable image files" in result.stdout and "Ray tasks on 1 node(s)" in result.stdout
    built = read_manifest(str(parallel))
    assert built.dataset_hash == expected.dataset_hash and built.sample_count("train") == 540
    for shard in (s for split in built.splits.values() for s in split):
        assert storage.read_bytes(str(parallel / shard.name)) == storage.read_bytes(str(single / shard.name))


def test_tasks_without_a_folder_are_refused_before_ray_starts(tmp_path):
    result = subprocess.run([sys.executable, "-m", "jobs.make_shards", "--dataset", "digits", "--tasks", "2",
                             "--out", str(tmp_path / "x")], cwd=REPO, env=clean_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "--tasks splits a --from-folder build" in result.stderr
    assert "Started a local Ray" not in result.stderr + result.stdout
