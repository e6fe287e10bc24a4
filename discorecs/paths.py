"""Where each dataset lives under the data root (a local folder, ``s3a://`` or ``hdfs://``).

The master dataset is append-only: the parsed catalog, the generated users and their initial
collections, and the stream's raw event log. Everything the batch layer writes can be
recomputed from it.
"""

from __future__ import annotations


def join(root: str, *parts: str) -> str:
    """Join path parts onto a root that may be a URI; ``os.path.join`` would mangle ``s3a://``."""
    return "/".join([root.rstrip("/"), *(part.strip("/") for part in parts)])


CATALOG_RELEASES = "catalog/releases"
"""The published Parquet catalog of releases."""

USERS = "users"
"""The generated population, published as one folder with four datasets below it."""
USER_PROFILES = "users/users"  # id, name, location, join date
USER_PREFERENCES = "users/preferences"  # the taste each user was drawn from (for evaluation)
INITIAL_COLLECTIONS = "users/collections"  # user, release, added time
INITIAL_WANTLISTS = "users/wantlists"  # user, release, added time


def catalog_releases(data_root: str) -> str:
    return join(data_root, CATALOG_RELEASES)


def event_log(data_root: str) -> str:
    """The stream's raw valid events, partitioned by event date."""
    return join(data_root, "events")


def snapshots(data_root: str) -> str:
    """Compacted collection and wantlist snapshots written by the nightly batch."""
    return join(data_root, "snapshots")


def checkpoints(data_root: str) -> str:
    """Structured Streaming checkpoints."""
    return join(data_root, "checkpoints")
