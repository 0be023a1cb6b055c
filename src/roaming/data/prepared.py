"""The prepared-file contract's integrity and provenance: checksums, fingerprint, data source.

Every dataset of a prepared HDF5 file is written with HDF5's Fletcher-32 filter, a checksum per
chunk that HDF5 checks on every read, so a flipped byte fails the read instead of changing a
result. Each dataset also carries the SHA-256 of its contents (attribute ``sha256``); the file's
``fingerprint`` is the digest of those per-dataset digests. Reading a split recomputes the
digests of what it read (about 2 GB/s: a second or so for CelebA's 162,770 training images) and
the fingerprint from the recorded digests, so data rewritten behind the checksums, or records
edited by hand, are caught too.

``data_source`` records whether the file was prepared from a synthetic fixture (``roaming
fixtures`` leaves a marker file, :data:`FIXTURE_MARKER`, at the root of what it writes) or from a
real release, so a preset can refuse the other kind.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from roaming import __version__
from roaming.errors import DataError

FORMAT = "roaming-h5"
FORMAT_VERSION = 2
"""2: Fletcher-32 checksums, per-dataset SHA-256, ``data_source``. Files of version 1 must be
prepared again."""
FIXTURE_MARKER = "roaming-fixture.json"
SYNTHETIC, REAL = "synthetic", "real"


def create_dataset(group: h5py.Group, name: str, **options: Any) -> h5py.Dataset:
    """``group.create_dataset`` with a Fletcher-32 checksum on every chunk (chunked storage,
    one chunk for small arrays when ``chunks`` is not given) and no timestamps, so the same
    data gives the same file."""
    options.setdefault("chunks", True)
    return group.create_dataset(name, fletcher32=True, track_times=False, **options)


def create_strings(group: h5py.Group, name: str, values: list[str]) -> h5py.Dataset:
    """A dataset of UTF-8 strings, fixed-length so that it takes the checksum filter (HDF5
    filters refuse variable-length data); read back as bytes, like variable-length ones."""
    encoded = [value.encode() for value in values]
    dtype = h5py.string_dtype("utf-8", length=max(map(len, encoded), default=1))
    return create_dataset(group, name, data=np.array(encoded, dtype=dtype.base), dtype=dtype)


class Digests:
    """The running SHA-256 of each dataset of a file being written, fed in write order."""

    def __init__(self) -> None:
        self._hashes: dict[str, Any] = {}

    def update(self, dataset: h5py.Dataset, values: Any) -> None:
        """Feed the next values written to ``dataset`` (in the order they are stored)."""
        self._hashes.setdefault(dataset.name, hashlib.sha256()).update(_bytes(values))

    def finish(self, file: h5py.File) -> str:
        """Store every dataset's digest as its ``sha256`` attribute and the file's fingerprint;
        returns the fingerprint. Every dataset of the file must have been fed (an empty one
        counts as fed with nothing)."""
        digests = {}
        for name, node in _datasets(file):
            digest = self._hashes.pop(name, None) or hashlib.sha256()
            node.attrs["sha256"] = digests[name] = digest.hexdigest()
        if self._hashes:
            raise ValueError(f"digests of datasets not in the file: {sorted(self._hashes)}")
        file.attrs["fingerprint"] = fingerprint = _combine(file, digests)
        return fingerprint


def _bytes(values: Any) -> memoryview | bytes:
    """The stored bytes of ``values``: C-order array memory, or UTF-8 lines for strings."""
    array = np.asarray(values)
    if array.dtype.kind in "OUS":
        return "\n".join(_text(item) for item in array.ravel()).encode() + b"\n"
    if array.size == 0:
        return b""
    return memoryview(np.ascontiguousarray(array)).cast("B")


def _text(item: Any) -> str:
    return item.decode() if isinstance(item, bytes) else str(item)


def _datasets(file: h5py.File) -> list[tuple[str, h5py.Dataset]]:
    found: list[tuple[str, h5py.Dataset]] = []

    def visit(_: str, node: h5py.HLObject) -> None:
        if isinstance(node, h5py.Dataset):
            found.append((node.name, node))

    file.visititems(visit)
    return sorted(found, key=lambda item: item[0])


def _combine(file: h5py.File, digests: dict[str, str]) -> str:
    """The fingerprint: one digest over each dataset's name, type, shape and digest."""
    combined = hashlib.sha256(f"{FORMAT} {FORMAT_VERSION}\n".encode())
    for name in sorted(digests):
        node = file[name]
        combined.update(f"{name} {node.dtype.str} {node.shape} {digests[name]}\n".encode())
    return combined.hexdigest()


def check_fingerprint(path: Path, file: h5py.File) -> None:
    """The fingerprint must be the digest of the recorded per-dataset digests (metadata only)."""
    digests = {}
    for name, node in _datasets(file):
        digest = node.attrs.get("sha256")
        if digest is None:
            raise DataError(path, f"dataset {name} has no checksum record; prepare it again")
        digests[name] = _text(digest)
    if _text(file.attrs.get("fingerprint", "")) != _combine(file, digests):
        raise DataError(path, "fingerprint does not match the data's records; prepare it again")


def read_checked(path: Path, dataset: h5py.Dataset) -> np.ndarray:
    """All of ``dataset``, its chunk checksums verified by HDF5 and its digest by us."""
    try:
        values = dataset[()]
    except OSError as error:
        if "filter" in str(error) or "checksum" in str(error).lower():
            raise DataError(
                path,
                f"dataset {dataset.name}: checksum mismatch, the file is damaged; prepare it again",
            ) from None
        raise DataError(path, f"dataset {dataset.name}: unreadable ({error})") from None
    recorded = dataset.attrs.get("sha256")
    if recorded is None or hashlib.sha256(_bytes(values)).hexdigest() != _text(recorded):
        raise DataError(
            path,
            f"dataset {dataset.name}: contents do not match its checksum record; prepare it again",
        )
    return values


def check_format(path: Path, attrs: dict[str, Any]) -> None:
    """Refuse files of another format or an older version of this one, naming what to do."""
    if attrs.get("format") != FORMAT:
        raise DataError(path, f"not a prepared roaming file (format {attrs.get('format')!r})")
    version = attrs.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(
            path,
            f"prepared by another version of roaming (format version {version}, this one reads "
            f"{FORMAT_VERSION}); run `roaming prepare` again",
        )


def write_fixture_marker(folder: Path, dataset: str, **options: Any) -> None:
    """Mark ``folder`` as a synthetic release written by ``roaming fixtures``."""
    record = {"generator": f"roaming {__version__} fixtures", "dataset": dataset, **options}
    (folder / FIXTURE_MARKER).write_text(json.dumps(record, indent=2) + "\n")


def source_attrs(raw: Path) -> dict[str, str]:
    """The provenance attributes of data prepared from ``raw``: ``data_source`` and, for a
    fixture, what generated it."""
    marker = Path(raw) / FIXTURE_MARKER
    if not marker.is_file():
        return {"data_source": REAL}
    return {"data_source": SYNTHETIC, "fixture": marker.read_text()}
