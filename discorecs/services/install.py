"""What installing the local services needs besides their jars: Java, Debian packages, hashes.

The jars themselves come from Maven Central (:mod:`discorecs.services.maven`); Java and Maven
come from Debian's packages when missing (as root, with apt-get).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from discorecs import stack
from discorecs.errors import DiscorecsError


class InstallError(DiscorecsError):
    """A service could not be installed; the message names it and what to do."""


JAVA_PACKAGE = f"openjdk-{stack.JAVA}-jre-headless"


def file_checksum(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Java:
    path: str
    version: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


def find_java(
    *,
    install_if_missing: bool = True,
    search_path: str | None = None,
    newest: int | None = None,
    service: str = "java",
) -> Java:
    """The ``java`` to run services with (``$JAVA_HOME/bin/java`` or the first on PATH),
    at least Java ``stack.JAVA`` and, if ``newest`` is given, no newer than that.

    When none is found and we run as root on Debian, Java 17 is installed with apt-get.
    """
    java_home = os.environ.get("JAVA_HOME")
    candidate = None
    if java_home and (Path(java_home) / "bin" / "java").exists():
        candidate = str(Path(java_home) / "bin" / "java")
    candidate = candidate or shutil.which("java", path=search_path)
    if candidate is None:
        if not install_if_missing or not can_apt():
            raise InstallError(
                f"{service}: no Java runtime found; install Java {stack.JAVA} "
                f"(`apt-get install {JAVA_PACKAGE}`) or set JAVA_HOME"
            )
        apt_install(JAVA_PACKAGE, service)
        candidate = shutil.which("java")
        if candidate is None:
            raise InstallError(f"{service}: {JAVA_PACKAGE} was installed but `java` is not on PATH")
    java = java_at(candidate, service)
    if java.major < stack.JAVA:
        raise InstallError(
            f"{service}: {candidate} is Java {java.version}; it needs Java {stack.JAVA}+ "
            f"(`apt-get install {JAVA_PACKAGE}`, then set JAVA_HOME)"
        )
    if newest is not None and java.major > newest:
        raise InstallError(
            f"{service}: {candidate} is Java {java.version}, newer than the Java {newest} it "
            f"runs on; install Java {stack.JAVA} (`apt-get install {JAVA_PACKAGE}`) and set "
            f"JAVA_HOME to it (e.g. /usr/lib/jvm/java-{stack.JAVA}-openjdk-amd64)"
        )
    return java


def java_at(path: str, service: str = "java") -> Java:
    """The Java at ``path`` and its version (from ``java -version``)."""
    result = subprocess.run([path, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "([^"]+)"', result.stderr + result.stdout)
    if not match:
        raise InstallError(
            f"{service}: `{path} -version` printed no version; is it a Java runtime?"
        )
    return Java(path, match.group(1))


def can_apt() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def apt_install(package: str, service: str) -> None:
    """Install a Debian package for ``service`` (needs root and apt-get)."""
    if not can_apt():
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
