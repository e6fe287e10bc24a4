"""Atomic publishing of master-dataset folders on a local data root.

A writer fills a staging folder beside the target and publishes it with renames, so readers
see the previous complete folder or the new complete folder, never a half-written one.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from discorecs import paths
from discorecs.errors import DiscorecsError

SUCCESS = "_SUCCESS"


class StorageError(DiscorecsError):
    """A dataset is missing or cannot be written where the settings say."""


def local_path(data_root: str, dataset: str) -> Path:
    """``dataset`` (a path under the data root) on a local (or ``file://``) data root."""
    root = data_root[len("file://") :] if data_root.startswith("file://") else data_root
    if "://" in root:
        raise StorageError(
            f"this step writes with local renames, so it needs a local data root; "
            f"DISCORECS_DATA_ROOT is {data_root}. Run it with a local data root, then copy "
            f"{dataset}/ to the cluster's data root (e.g. `aws s3 sync`)"
        )
    return Path(paths.join(root, dataset))


@contextmanager
def staged(target: Path) -> Iterator[Path]:
    """A fresh staging folder that replaces ``target`` when the block ends without error and
    is removed when it does not."""
    target.parent.mkdir(parents=True, exist_ok=True)
    stamp = f"{os.getpid()}-{int(time.time() * 1000)}"
    staging = target.parent / f".{target.name}.staging-{stamp}"
    staging.mkdir()
    try:
        yield staging
        (staging / SUCCESS).write_text("")
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{stamp}"
            target.rename(old)
        staging.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def require_published(folder: Path, what: str, how: str) -> None:
    """Raise :class:`StorageError` unless ``folder`` was published (has ``_SUCCESS``)."""
    if not (folder / SUCCESS).exists():
        raise StorageError(f"no {what} at {folder}; {how}")
