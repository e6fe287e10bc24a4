"""Where each dataset lives under the data root (a local folder, ``s3a://`` or ``hdfs://``).

The master dataset is append-only: the parsed catalog, the generated users and their initial
collections, and the stream's raw event log. Everything the batch layer writes can be
recomputed from it.
"""

from __future__ import annotations


def join(root: str, *parts: str) -> str:
    """Join path parts onto a root that may be a URI; ``os.path.join`` would mangle ``s3a://``."""
    return "/".join([root.rstrip("/"), *(part.strip("/") for part in parts)])


def catalog_releases(data_root: str) -> str:
    """The published Parquet catalog of releases."""
    return join(data_root, "catalog", "releases")


def users(data_root: str) -> str:
    """Generated users (id, name, location, join date)."""
    return join(data_root, "users", "users")


def initial_collections(data_root: str) -> str:
    """Generated users' initial collections (user, release, added time)."""
    return join(data_root, "users", "collections")


def initial_wantlists(data_root: str) -> str:
    """Generated users' initial wantlists."""
    return join(data_root, "users", "wantlists")


def event_log(data_root: str) -> str:
    """The stream's raw valid events, partitioned by event date."""
    return join(data_root, "events")


def snapshots(data_root: str) -> str:
    """Compacted collection and wantlist snapshots written by the nightly batch."""
    return join(data_root, "snapshots")


def checkpoints(data_root: str) -> str:
    """Structured Streaming checkpoints."""
    return join(data_root, "checkpoints")
