"""A bundle tar from a server is hostile input: only the bundle's own regular files are unpacked
(no paths, links, devices or duplicates), into a new directory."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from callgate.recording.bundle_tar import BundleTarError, pack, unpack


def tar_of(tmp_path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    path = tmp_path / "in.tar"
    with tarfile.open(path, "w") as archive:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def test_a_packed_bundle_unpacks_to_the_same_files(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name in ("recording.cgrec", "metadata.json", "audio.ogg", "audit.jsonl"):
        (bundle / name).write_bytes(name.encode() * 3)
    (bundle / "stray.txt").write_text("not part of a bundle")
    pack(bundle, tmp_path / "b.tar")
    names = unpack(tmp_path / "b.tar", tmp_path / "out")
    assert sorted(names) == ["audio.ogg", "audit.jsonl", "metadata.json", "recording.cgrec"]
    assert (tmp_path / "out" / "audio.ogg").read_bytes() == b"audio.ogg" * 3
    with pytest.raises(FileExistsError):
        unpack(tmp_path / "b.tar", tmp_path / "out")


@pytest.mark.parametrize(
    "info",
    [
        tarfile.TarInfo("../audio.wav"),
        tarfile.TarInfo("sub/audio.wav"),
        tarfile.TarInfo("/etc/audio.wav"),
        tarfile.TarInfo("evil.sh"),
    ],
)
def test_paths_and_strangers_are_refused(tmp_path: Path, info: tarfile.TarInfo) -> None:
    with pytest.raises(BundleTarError, match="unexpected entry"):
        unpack(tar_of(tmp_path, (info, b"x")), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_links_duplicates_and_garbage_are_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("audio.wav")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(BundleTarError, match="unexpected entry"):
        unpack(tar_of(tmp_path, (link, b"")), tmp_path / "out")
    twice = tarfile.TarInfo("audio.wav")
    with pytest.raises(BundleTarError, match="unexpected entry"):
        unpack(
            tar_of(tmp_path, (twice, b"a"), (tarfile.TarInfo("audio.wav"), b"b")), tmp_path / "o"
        )
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(BundleTarError, match="not a bundle"):
        unpack(tmp_path / "junk.tar", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()
