"""The lean tar walk (gan/shards/tar_walk.py) against WebDataset's own reader: the same samples from our shards and
from hand-made USTAR archives; other tar forms handed to WebDataset; damage detected, not read as data."""
import io
import re
import tarfile

import pytest
import webdataset as wds

from gan.shards.manifest import ShardInfo, read_manifest, shard_location
from gan.shards.reader import DataHealth, ReadPolicy, read_shard
from gan.shards import tar_walk
from gan.shards.tar_walk import NotPlainTar, tar_samples


def _tar(members: list[tuple[str, bytes | None]], tar_format: int = tarfile.USTAR_FORMAT) -> bytes:
    """An archive of (name, bytes) members; None makes a directory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as tar:
        for name, body in members:
            member = tarfile.TarInfo(name)
            if body is None:
                member.type = tarfile.DIRTYPE
                tar.addfile(member)
            else:
                member.size = len(body)
                tar.addfile(member, io.BytesIO(body))
    return buffer.getvalue()


def _webdataset_samples(path) -> list[dict]:
    return list(wds.tarfile_samples([{"url": str(path)}]))


def _walked(path) -> list[dict]:
    with open(path, "rb") as stream:
        return list(tar_samples(stream, str(path)))


def test_our_shards_give_webdatasets_samples_byte_for_byte(digits_shards):
    manifest = read_manifest(str(digits_shards))
    for shard in manifest.shards("train")[:3] + manifest.shards("holdout")[:1]:
        path = shard_location(str(digits_shards), shard)
        walked = _walked(path)
        assert walked == _webdataset_samples(path) and len(walked) == shard.samples


class _Trickle:
    """A stream that returns at most `most` bytes a read, as a network body may."""

    def __init__(self, data: bytes, most: int):
        self.stream, self.most = io.BytesIO(data), most

    def read(self, size: int = -1) -> bytes:
        return self.stream.read(min(size, self.most) if size >= 0 else self.most)


def test_short_reads_and_chunks_that_end_inside_a_members_padding_lose_nothing(digits_shards, monkeypatch):
    monkeypatch.setattr(tar_walk, "_CHUNK", 700)  # not a multiple of 512: chunk ends fall inside padding
    shard = read_manifest(str(digits_shards)).shards("train")[0]
    path = shard_location(str(digits_shards), shard)
    data = open(path, "rb").read()
    trickled = list(tar_samples(_Trickle(data, 333), path))
    assert trickled == _webdataset_samples(path) and len(trickled) == shard.samples


def test_hand_made_ustar_archives_group_as_webdataset_groups_them(tmp_path):
    deep = "/".join(["folder"] * 30)  # 209 characters: USTAR keeps the directories in its prefix field
    path = tmp_path / "hand.tar"
    path.write_bytes(_tar([("images", None), ("images/a.PNG", b"1"), ("images/a.cls", b"3"), ("__meta__", b"x"),
                           ("README", b"no suffix"), ("images/b.c.d.json", b"{}"), (f"{deep}/c.npy", b"2"),
                           ("images/a.txt", b"a key seen before, no longer consecutive")]))
    walked = _walked(path)
    assert walked == _webdataset_samples(path)
    assert [sample["__key__"] for sample in walked] == ["images/a", "images/b", f"{deep}/c", "images/a"]
    assert walked[0]["png"] == b"1" and walked[1]["c.d.json"] == b"{}"


@pytest.mark.parametrize("name, tar_format", [("ünïcode.npy", tarfile.PAX_FORMAT), ("x" * 120 + ".npy", tarfile.GNU_FORMAT)])
def test_other_tar_forms_are_left_to_webdataset_with_no_sample_lost_or_repeated(tmp_path, name, tar_format):
    path = tmp_path / "other.tar"
    path.write_bytes(_tar([("first.npy", b"1"), ("first.cls", b"0"), (name, b"2"), ("last.npy", b"3")], tar_format))
    with pytest.raises(NotPlainTar):
        _walked(path)
    health = DataHealth()
    samples = list(read_shard(str(path), ShardInfo(path.name, 3, ""), health, ReadPolicy(), ours=True))
    assert samples == _webdataset_samples(path)
    assert (health.bad_shards, health.delivered) == (0, 3)


@pytest.mark.parametrize("damage, problem", [
    (lambda tar: tar[:10] + b"\x01" + tar[11:], "corrupt.*checksum"),  # a flipped name byte in the first header
    (lambda tar: tar[:1536] + b"\xff" * 512 + tar[2048:], "corrupt"),  # the second member's header overwritten
    (lambda tar: tar[:1000], "corrupt.*end of data"),  # cut inside the first member
])
def test_a_damaged_header_or_body_makes_the_shard_bad_not_its_bytes_data(tmp_path, damage, problem):
    path = tmp_path / "damaged.tar"
    path.write_bytes(damage(_tar([("a.npy", b"1" * 600), ("a.cls", b"0"), ("b.npy", b"2"), ("b.cls", b"1")])))
    health = DataHealth()
    samples = list(read_shard(str(path), ShardInfo(path.name, 2, ""), health, ReadPolicy(attempts=1), ours=True))
    assert health.bad_shards == 1 and health.skipped_samples == 2 - len(samples)
    assert health.problems and re.search(problem, health.problems[0])
