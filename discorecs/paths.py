"""Where each dataset lives under the data root (a local folder, ``s3a://`` or ``hdfs://``).

The master dataset is append-only: the parsed catalog, the generated users and their initial
collections, and the stream's raw event log. Everything the batch layer writes can be
recomputed from it.
"""

from __future__ import annotations


def join(root: str, *parts: str) -> str:
    """Join path parts onto a root that may be a URI; ``os.path.join`` would mangle ``s3a://``."""
    return "/".join([root.rstrip("/"), *(part.strip("/") for part in parts)])


# Published datasets (discorecs.storage): each is a folder of versions and a pointer to the
# current one; the constants below a dataset name the parts of one of its versions.
CATALOG_RELEASES = "catalog/releases"
"""The Parquet catalog of releases."""

USERS = "users"
"""The generated population: four datasets in each version."""
USER_PROFILES = "users"  # id, name, location, join date
USER_PREFERENCES = "preferences"  # the taste each user was drawn from (for evaluation)
INITIAL_COLLECTIONS = "collections"  # user, release, added time
INITIAL_WANTLISTS = "wantlists"  # user, release, added time

SNAPSHOTS = "snapshots"
"""The compacted collections and wantlists each nightly run writes (its version id is the
run's id; the pointer carries the ingest time of the last event it includes)."""
SNAPSHOT_COLLECTIONS = "collections"
SNAPSHOT_WANTLISTS = "wantlists"


EVENT_LOG = "events"
"""The stream's raw valid events, partitioned by event date (appended to, never published)."""


def event_log(data_root: str) -> str:
    return join(data_root, EVENT_LOG)


def checkpoints(data_root: str) -> str:
    """Structured Streaming checkpoints."""
    return join(data_root, "checkpoints")
