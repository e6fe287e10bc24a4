"""Where datasets live on the data root, and how they are published: a new version, then a
pointer.

Every dataset the project publishes (the catalog, the generated users, the nightly
snapshots) lives under the data root as::

    <dataset>/<version>/...        one folder per publish, never changed once published
    <dataset>/_CURRENT.json        {"version": ..., "published_at": ..., the writer's details}

A writer fills a new version folder and then replaces the pointer, one small object: on a
local disk a rename, on S3 a single PUT, both atomic. A reader reads the pointer once and then
only that version's files, so it never sees a half-written dataset, and a run that fails
leaves the pointer where it was. Nothing is renamed on an object store, where a rename is a
copy of every file. Versions other than the current one are deleted by a later publish once
they are older than ``settings.old_versions_grace_hours``: a reader that resolved the previous
pointer just before a publish has that long to finish.

The same mechanism on every data root the settings accept: a local folder (or ``file://``),
``s3a://`` (pyarrow's S3 filesystem here and Hadoop's ``s3a`` in Spark, with the same endpoint
and the AWS default credentials) and ``hdfs://`` (pyarrow's Hadoop filesystem, which needs a
Hadoop client, i.e. ``libhdfs``, on the machine). Spark reads and writes a version through its
URI (:attr:`Location.uri`); Python code through :attr:`Location.filesystem`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from discorecs.errors import DiscorecsError
from discorecs.settings import Settings

POINTER = "_CURRENT.json"
MANIFEST = "_manifest.json"  # in a version folder: what its writer reports of it
SUCCESS = "_SUCCESS"  # in a version folder: every file of it was written
_VERSION = re.compile(r"^(\d{8}T\d{6}Z)-[0-9a-f]+$")


class StorageError(DiscorecsError):
    """A dataset is missing or cannot be read or written where the settings say."""


def new_version_id(now: datetime | None = None) -> str:
    """A version (and batch run) id: its UTC time, then random hex, so ids sort by time."""
    return f"{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Location:
    """A folder on a data root's filesystem: ``path`` in pyarrow's terms, ``uri`` in Spark's."""

    filesystem: pafs.FileSystem = field(repr=False)
    path: str
    uri: str

    @classmethod
    def local(cls, folder: Path | str) -> Location:
        folder = str(Path(folder).absolute())
        return cls(pafs.LocalFileSystem(), folder, folder)

    def join(self, *parts: str) -> Location:
        tail = "/".join(part.strip("/") for part in parts)
        return Location(self.filesystem, f"{self.path.rstrip('/')}/{tail}", f"{self.uri}/{tail}")

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def exists(self, name: str = "") -> bool:
        path = self.join(name).path if name else self.path
        return self.filesystem.get_file_info(path).type != pafs.FileType.NotFound

    def read_text(self, name: str) -> str:
        with self.filesystem.open_input_stream(self.join(name).path) as stream:
            return stream.read().decode("utf-8")

    def write_text(self, name: str, text: str) -> None:
        self.filesystem.create_dir(self.path, recursive=True)  # a no-op on object stores
        with self.filesystem.open_output_stream(self.join(name).path) as stream:
            stream.write(text.encode("utf-8"))

    def folders(self) -> list[str]:
        """The names of this folder's sub-folders (not those starting with "_" or "."),
        sorted; none if the folder does not exist."""
        selector = pafs.FileSelector(self.path, allow_not_found=True)
        return sorted(
            info.base_name
            for info in self.filesystem.get_file_info(selector)
            if info.type == pafs.FileType.Directory and not info.base_name.startswith(("_", "."))
        )

    def parquet_files(self, part: str = "") -> list[str]:
        """The Parquet files of this folder (or of its sub-folder ``part``), sorted."""
        folder = self.join(part).path if part else self.path
        infos = self.filesystem.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        return sorted(i.path for i in infos if i.is_file and i.base_name.endswith(".parquet"))

    def parquet_file(self, path: str) -> pq.ParquetFile:
        return pq.ParquetFile(self.filesystem.open_input_file(path))

    def dataset(self, part: str = "") -> ds.Dataset:
        """The Parquet dataset in this folder (or its sub-folder ``part``)."""
        folder = self.join(part).path if part else self.path
        return ds.dataset(folder, filesystem=self.filesystem, format="parquet")


def read_manifest(place: Location | Path, what: str, how: str) -> dict[str, Any]:
    """The :data:`MANIFEST` of a dataset's folder (a published version, or a folder a writer
    filled), or a :class:`StorageError` naming ``what`` is missing and ``how`` to make it."""
    place = location(place)
    if not place.exists(MANIFEST):
        raise StorageError(f"no {what} at {place.uri}; {how}")
    return json.loads(place.read_text(MANIFEST))


def location(place: Location | Path | str) -> Location:
    """``place`` as a :class:`Location` (a local folder when given a path)."""
    return place if isinstance(place, Location) else Location.local(place)


def data_root(settings: Settings) -> Location:
    """The data root as a :class:`Location` on its filesystem."""
    root = settings.data_root
    if root.startswith("s3a://"):
        endpoint = settings.s3_endpoint
        scheme, _, address = endpoint.partition("://")
        filesystem = pafs.S3FileSystem(
            region=settings.s3_region,
            endpoint_override=address or None,
            scheme=scheme or "https",
        )
        return Location(filesystem, root[len("s3a://") :], root)
    if root.startswith("hdfs://"):
        try:
            filesystem, path = pafs.FileSystem.from_uri(root)
        except Exception as error:  # pyarrow raises OSError or ArrowException kinds
            raise StorageError(
                f"cannot open {root}: {error}. Reading hdfs:// from Python needs a Hadoop "
                "client on this machine (libhdfs; set ARROW_LIBHDFS_DIR and CLASSPATH)"
            ) from error
        return Location(filesystem, path, root)
    folder = root[len("file://") :] if root.startswith("file://") else root
    return Location(pafs.LocalFileSystem(), folder, root)


@dataclass(frozen=True)
class Version:
    """One published (or being written) version of a dataset."""

    dataset: str  # e.g. paths.CATALOG_RELEASES
    id: str
    location: Location
    details: dict[str, Any] = field(default_factory=dict)


def current(settings: Settings, dataset: str) -> Version | None:
    """The published version of ``dataset``, or None if it was never published."""
    folder = data_root(settings).join(dataset)
    try:
        pointer = json.loads(folder.read_text(POINTER))
        version_id = str(pointer["version"])
    except FileNotFoundError:
        # A dataset folder that holds its files and _SUCCESS itself is read in place: how
        # earlier releases published, and what a dataset copied over by hand looks like.
        if folder.exists(SUCCESS):
            return Version(dataset, "unversioned", folder)
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StorageError(
            f"cannot read {folder.uri}/{POINTER}: {error}. Check the data root's address and "
            "credentials; a damaged pointer is fixed by publishing the dataset again"
        ) from error
    return Version(dataset, version_id, folder.join(version_id), pointer)


def require_current(settings: Settings, dataset: str, what: str, how: str) -> Version:
    """:func:`current`, or a :class:`StorageError` saying what is missing and how to make it."""
    version = current(settings, dataset)
    if version is None:
        where = data_root(settings).join(dataset).uri
        raise StorageError(f"{where} holds no published {what}; {how}")
    return version


def begin(settings: Settings, dataset: str, version_id: str | None = None) -> Version:
    """A new version's folder (nothing written yet); fill it, then :func:`publish` it."""
    version_id = version_id or new_version_id()
    return Version(dataset, version_id, data_root(settings).join(dataset, version_id))


def publish(settings: Settings, version: Version, details: dict[str, Any] | None = None) -> None:
    """Mark ``version`` complete, point readers at it, then delete old versions whose grace
    period is over."""
    version.location.write_text(SUCCESS, "")
    pointer = {
        "version": version.id,
        "published_at": datetime.now(UTC).isoformat(),
        **(details or {}),
    }
    folder = data_root(settings).join(version.dataset)
    text = json.dumps(pointer, indent=2)
    if isinstance(folder.filesystem, pafs.S3FileSystem):
        folder.write_text(POINTER, text)  # one PUT: readers see the old object or the new one
    else:
        staging = f".{POINTER}.{os.getpid()}-{secrets.token_hex(3)}"
        folder.write_text(staging, text)
        folder.filesystem.move(folder.join(staging).path, folder.join(POINTER).path)
    remove_old_versions(settings, version.dataset, keep=version.id)


def remove_old_versions(settings: Settings, dataset: str, keep: str) -> list[str]:
    """Delete the versions of ``dataset`` other than ``keep`` written before the grace period
    (finished or not: a run that died leaves a version nobody points at). Returns their ids."""
    folder = data_root(settings).join(dataset)
    cutoff = datetime.now(UTC) - timedelta(hours=settings.old_versions_grace_hours)
    selector = pafs.FileSelector(folder.path, allow_not_found=True)
    removed = []
    for info in folder.filesystem.get_file_info(selector):
        match = _VERSION.match(info.base_name)
        if info.type != pafs.FileType.Directory or not match or info.base_name == keep:
            continue
        written = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        if written < cutoff:
            folder.filesystem.delete_dir(info.path)
            removed.append(info.base_name)
    return removed


def discard(version: Version) -> None:
    """Delete an unpublished version's files (best effort: leftovers go with the grace)."""
    with suppress(FileNotFoundError, OSError):
        version.location.filesystem.delete_dir(version.location.path)


def _staging_area(settings: Settings) -> Path:
    """Where uploads to a remote root are staged, cleared of what runs killed before they
    could remove their own staging left there more than the grace period ago."""
    area = settings.home / "staging"
    area.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - settings.old_versions_grace_hours * 3600
    for leftover in area.iterdir():
        if leftover.stat().st_mtime < cutoff:
            shutil.rmtree(leftover, ignore_errors=True)
    return area


@contextmanager
def publishing(
    settings: Settings, dataset: str, details: dict[str, Any] | None = None
) -> Iterator[Path]:
    """A local folder to write a new version of ``dataset`` into; published when the block
    ends without error, discarded when it does not. On a local data root the folder is the
    version itself; on a remote one it is a staging folder under the home, uploaded whole
    before the pointer moves. ``details`` (filled in by the block if it likes) go into the
    pointer."""
    version = begin(settings, dataset)
    root = version.location
    staging = None
    published = False
    try:
        if root.is_local:
            folder = Path(root.path)
            folder.mkdir(parents=True)
        else:
            staging = folder = Path(tempfile.mkdtemp(dir=_staging_area(settings)))
        yield folder
        if staging is not None:
            pafs.copy_files(
                str(staging),
                root.path,
                source_filesystem=pafs.LocalFileSystem(),
                destination_filesystem=root.filesystem,
                use_threads=True,
            )
        published = True  # from here on the pointer may name it: never discard it
        publish(settings, version, details)
    except BaseException:
        if not published:
            discard(version)
        raise
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
