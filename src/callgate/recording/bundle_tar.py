"""An export bundle as one tar stream, for `GET /api/recordings/{id}/bundle` and the CLI's
`recording export --server`: packed from the directory export_bundle wrote, unpacked into a new
directory accepting only the bundle's own regular files (no links, no paths, no surprises)."""

from __future__ import annotations

import tarfile
from pathlib import Path

MEMBERS = frozenset(
    {"recording.cgrec", "metadata.json", "audio.wav", "audio.ogg", "audit.jsonl",
     "checkpoint.txt", "audit-public.pem"}
)  # fmt: skip
MAX_BYTES = 8 << 30  # a 6 h WAV is about 4 GiB


class BundleTarError(Exception):
    pass


def pack(bundle: Path, tar_path: Path) -> None:
    """`bundle`'s files, flat, into an uncompressed tar (the audio barely compresses)."""
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(bundle.iterdir()):
            if path.name in MEMBERS and path.is_file():
                archive.add(path, arcname=path.name, recursive=False)


def unpack(tar_path: Path, out: Path) -> list[str]:
    """Extract into the new directory `out`; BundleTarError for anything but bundle files."""
    names: list[str] = []
    total = 0
    try:
        with tarfile.open(tar_path, "r:") as archive:
            members = archive.getmembers()
            for member in members:
                if member.name not in MEMBERS or not member.isreg() or member.name in names:
                    raise BundleTarError(f"unexpected entry in the bundle: {member.name!r}")
                total += member.size
                names.append(member.name)
            if total > MAX_BYTES:
                raise BundleTarError("the bundle is larger than any export")
            out.mkdir(parents=True, exist_ok=False)
            archive.extractall(out, members=members, filter="data")
    except tarfile.TarError as exc:
        raise BundleTarError(f"not a bundle: {exc}") from None
    return names
