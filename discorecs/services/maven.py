"""JVM software from Maven Central, installed on first use and checked against pinned hashes.

Each bundle (Kafka's broker, Cassandra, Spark's Kafka connector, Hadoop's ``s3a://``
filesystem) is a folder of jars under the cache folder. Which jars, at which versions, with
which SHA-256, is locked in ``locks/<bundle>.lock`` beside this file, committed with the
project: an install asks Maven for exactly the locked files (no dependency resolution at
install time, so a new release on Central changes nothing here), checks every file's hash,
and renames the folder into place only when all of them match. By default Maven (Debian's
``maven`` package, installed when missing) does the downloading, so Central's address is
Maven's own default or a mirror the user has configured in ``~/.m2/settings.xml``. With a
repository address (the ``maven_repository`` setting) each locked file is fetched from it
directly over HTTP: a cluster node needs no Maven, and any server with Maven's layout (a
company mirror, or a folder served over HTTP) can stand in for Central.

A cluster node that runs no Python of the project's own installs Kafka's or Cassandra's jars
with the standard library alone::

    PYTHONPATH=/opt/discorecs/app python3 -m discorecs.services.maven install kafka \
        --repository https://repo1.maven.org/maven2 --cache /opt/discorecs

After changing a version in :mod:`discorecs.stack`, regenerate a lock with::

    python -m discorecs.services.maven lock kafka     # or cassandra, spark-kafka
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from discorecs import stack
from discorecs.progress import say_to_stderr
from discorecs.services.install import InstallError, apt_install, file_checksum

LOCKS = Path(__file__).with_name("locks")
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MAVEN_PACKAGE = "maven"


@dataclass(frozen=True)
class Bundle:
    """A set of jars one JVM service (or Spark) runs with."""

    name: str  # the lock file's name, and the folder's under the cache
    service: str  # who needs it, for messages ("kafka broker")
    roots: tuple[str, ...]  # group:artifact:version, resolved with their dependencies to lock
    provided_by_pyspark: bool = False  # leave out what PySpark's own jars folder already has

    @property
    def lock_path(self) -> Path:
        return LOCKS / f"{self.name}.lock"


KAFKA = Bundle(
    "kafka",
    "kafka broker",
    (
        f"org.apache.kafka:kafka_{stack.SCALA}:{stack.KAFKA}",
        # Kafka's published POM carries no logging binding (the tarball adds one): without
        # this the broker logs nothing. The 2.x line of log4j's binding for slf4j 1.7.
        "org.apache.logging.log4j:log4j-slf4j-impl:2.24.3",
    ),
)
CASSANDRA = Bundle(
    "cassandra", "cassandra", (f"org.apache.cassandra:cassandra-all:{stack.CASSANDRA}",)
)
SPARK_KAFKA = Bundle("spark-kafka", "spark's kafka connector", (stack.SPARK_KAFKA_CONNECTOR,), True)
S3A = Bundle("s3a", "spark's s3a:// filesystem", (stack.HADOOP_AWS,), True)
BUNDLES = {bundle.name: bundle for bundle in (KAFKA, CASSANDRA, SPARK_KAFKA, S3A)}


@dataclass(frozen=True)
class Jar:
    """One locked file: its coordinates and the SHA-256 it must have."""

    group: str
    artifact: str
    version: str
    classifier: str
    sha256: str

    @property
    def filename(self) -> str:
        suffix = f"-{self.classifier}" if self.classifier else ""
        return f"{self.artifact}-{self.version}{suffix}.jar"

    @property
    def coordinates(self) -> str:
        tail = f":{self.classifier}" if self.classifier else ""
        return f"{self.group}:{self.artifact}:{self.version}{tail}"

    def line(self) -> str:
        return f"{self.coordinates} {self.sha256}"

    @classmethod
    def parse(cls, line: str) -> Jar:
        coordinates, sha256 = line.split()
        group, artifact, version, *classifier = coordinates.split(":")
        return cls(group, artifact, version, classifier[0] if classifier else "", sha256)


def read_lock(bundle: Bundle) -> list[Jar]:
    """The bundle's locked jars (``#`` lines are comments)."""
    try:
        text = bundle.lock_path.read_text()
    except FileNotFoundError:
        raise InstallError(
            f"{bundle.service}: {bundle.lock_path} is missing; it is part of the project "
            f"(restore it, or run `python -m discorecs.services.maven lock {bundle.name}`)"
        ) from None
    lines = (line.strip() for line in text.splitlines())
    return [Jar.parse(line) for line in lines if line and not line.startswith("#")]


def lock_digest(jars: Iterable[Jar]) -> str:
    return hashlib.sha256("\n".join(sorted(j.line() for j in jars)).encode()).hexdigest()[:12]


def ensure_bundle(
    bundle: Bundle,
    cache_dir: Path,
    say: Callable[[str], None] | None = None,
    repository: str = "",
) -> Path:
    """The folder holding the bundle's jars, installed if missing; every jar is checked
    against the lock. The folder's name carries the lock's digest, so a changed lock
    installs anew beside the old one. ``repository``: fetch from this address directly
    instead of through Maven."""
    jars = read_lock(bundle)
    target = cache_dir / "jvm" / f"{bundle.name}-{lock_digest(jars)}"
    if (target / ".complete").exists():
        return target
    (say or say_to_stderr)(
        f"discorecs: installing {bundle.service} ({len(jars)} jars from "
        f"{repository or 'Maven Central'}, first run only)"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        local_repository = cache_dir / "maven"
        if repository:
            _download(bundle, jars, staging, repository)
            verify(bundle, jars, staging)
        else:
            _copy_from_maven(bundle, jars, staging, local_repository)
            verify(bundle, jars, staging, local_repository)
        (staging / ".complete").write_text(lock_digest(jars))
        # mkdtemp makes the folder private; the services that read the jars may run as
        # another user than the one who installed them (a cluster node's service user).
        staging.chmod(0o755)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def verify(bundle: Bundle, jars: list[Jar], folder: Path, repository: Path | None = None) -> None:
    """Raise unless ``folder`` holds exactly the locked jars, each with its locked hash. A
    file that fails is removed from Maven's local repository too, so the next try fetches
    it again instead of trusting the bad copy."""
    present = {path.name for path in folder.glob("*.jar")}
    missing = sorted({jar.filename for jar in jars} - present)
    if missing:
        raise InstallError(
            f"{bundle.service}: Maven did not deliver {', '.join(missing[:5])}"
            f"{' and more' if len(missing) > 5 else ''}; run `discorecs up` again"
        )
    for jar in jars:
        actual = file_checksum(folder / jar.filename, "sha256")
        if actual != jar.sha256:
            if repository is not None:
                _local_copy(repository, jar).unlink(missing_ok=True)
            raise InstallError(
                f"{bundle.service}: {jar.coordinates} failed its checksum (sha256 {actual}, "
                f"locked {jar.sha256}); the copy was deleted, run `discorecs up` again (if it "
                "fails again, the file on the registry or its mirror is not the locked one)"
            )


def _local_copy(repository: Path, jar: Jar) -> Path:
    return repository.joinpath(*jar.group.split("."), jar.artifact, jar.version, jar.filename)


def _download(bundle: Bundle, jars: list[Jar], dest: Path, repository: str) -> None:
    """Fetch each locked file from a repository with Maven's layout into ``dest``."""
    for jar in jars:
        url = "/".join(
            [repository.rstrip("/"), *jar.group.split("."), jar.artifact, jar.version, jar.filename]
        )
        try:
            with (
                urllib.request.urlopen(url, timeout=60) as answer,
                (dest / jar.filename).open("wb") as out,
            ):
                shutil.copyfileobj(answer, out, 1 << 20)
        except (urllib.error.URLError, OSError) as error:
            raise InstallError(
                f"{bundle.service}: could not fetch {url}: {error}; check that the repository "
                "is reachable from this machine (the maven_repository setting), then retry"
            ) from None


def _pom(name: str, dependencies: Iterable[str], *, transitive: bool) -> str:
    entries = []
    for coordinates in dependencies:
        group, artifact, version, *classifier = coordinates.split(":")
        parts = [
            f"<groupId>{escape(group)}</groupId>",
            f"<artifactId>{escape(artifact)}</artifactId>",
            f"<version>{escape(version)}</version>",
        ]
        if classifier:
            parts.append(f"<classifier>{escape(classifier[0])}</classifier>")
        if not transitive:
            parts.append(
                "<exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId>"
                "</exclusion></exclusions>"
            )
        entries.append("<dependency>" + "".join(parts) + "</dependency>")
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        f"<groupId>discorecs.local</groupId><artifactId>{escape(name)}</artifactId>"
        "<version>0</version><packaging>pom</packaging>"
        f"<dependencies>{''.join(entries)}</dependencies></project>\n"
    )


def _maven(bundle: Bundle, pom: str, goal: str, repository: Path, *options: str) -> None:
    """Run one dependency-plugin goal on ``pom`` with the cache's own local repository."""
    mvn = shutil.which("mvn")
    if mvn is None:
        apt_install(MAVEN_PACKAGE, bundle.service)
        mvn = shutil.which("mvn")
        if mvn is None:
            raise InstallError(f"{bundle.service}: `{MAVEN_PACKAGE}` was installed but no mvn")
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "pom.xml").write_text(pom)
        command = [
            mvn,
            "--batch-mode",
            "--quiet",
            "-Dstyle.color=never",
            "--file",
            str(Path(work) / "pom.xml"),
            f"-Dmaven.repo.local={repository}",
            f"{DEPENDENCY_PLUGIN}:{goal}",
            *options,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        errors = [line for line in result.stdout.splitlines() if "ERROR" in line]
        detail = " ".join(line.removeprefix("[ERROR] ") for line in errors[:3])[:600]
        raise InstallError(
            f"{bundle.service}: Maven could not fetch its jars from Maven Central: "
            f"{detail or result.stderr.strip()[-400:]}; check access to Maven Central (or a "
            "mirror in ~/.m2/settings.xml), then run `discorecs up` again"
        )


def _copy_from_maven(bundle: Bundle, jars: list[Jar], dest: Path, repository: Path) -> None:
    pom = _pom(bundle.name, (jar.coordinates for jar in jars), transitive=False)
    _maven(bundle, pom, "copy-dependencies", repository, f"-DoutputDirectory={dest}")


def lock(bundle: Bundle, repository: Path) -> list[Jar]:
    """Resolve the bundle's roots with their runtime dependencies and write its lock file
    (a maintainer's step, after a version change in :mod:`discorecs.stack`)."""
    with tempfile.TemporaryDirectory() as work:
        listing = Path(work) / "dependencies.txt"
        _maven(
            bundle,
            _pom(bundle.name, bundle.roots, transitive=True),
            "list",
            repository,
            f"-DoutputFile={listing}",
            "-DoutputAbsoluteArtifactFilename=true",
            "-DincludeScope=runtime",
        )
        jars = []
        for line in listing.read_text().splitlines():
            # "group:artifact:jar[:classifier]:version:scope:/path -- module name (auto)"
            fields = line.split(" -- ")[0].strip().split(":")
            if len(fields) < 6 or fields[2] != "jar":
                continue
            group, artifact, _, *middle, path = fields
            classifier, version = (middle[0], middle[1]) if len(middle) == 3 else ("", middle[0])
            sha256 = file_checksum(Path(path), "sha256")
            jars.append(Jar(group, artifact, version, classifier, sha256))
    if bundle.provided_by_pyspark:
        jars = [jar for jar in jars if not _in_pyspark(jar.artifact)]
    jars.sort(key=lambda jar: jar.coordinates)
    header = [
        f"# {bundle.service}: {', '.join(bundle.roots)} and what they need at run time",
        "# (generated by `python -m discorecs.services.maven lock "
        f"{bundle.name}`; one line per jar: coordinates, sha256)",
    ]
    bundle.lock_path.parent.mkdir(parents=True, exist_ok=True)
    bundle.lock_path.write_text("\n".join([*header, *(jar.line() for jar in jars)]) + "\n")
    return jars


def _in_pyspark(artifact: str) -> bool:
    """Whether PySpark ships a jar of this artifact (any version) in its own jars folder."""
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    return any(
        path.name.startswith(f"{artifact}-") and path.name[len(artifact) + 1 :][:1].isdigit()
        for path in jars.glob("*.jar")
    )


def main(argv: list[str]) -> int:
    """``lock BUNDLE`` (a maintainer's step), or ``install BUNDLE --repository URL --cache DIR``
    (a cluster node's: prints the installed folder)."""
    names = "{" + ",".join(BUNDLES) + "}"
    if len(argv) == 6 and argv[0] == "install" and argv[1] in BUNDLES:
        options = dict(zip(argv[2::2], argv[3::2], strict=True))
        if set(options) == {"--repository", "--cache"}:
            try:
                folder = ensure_bundle(
                    BUNDLES[argv[1]], Path(options["--cache"]), repository=options["--repository"]
                )
            except InstallError as error:
                print(f"discorecs: {error}", file=sys.stderr)
                return 1
            print(folder)
            return 0
    if len(argv) != 2 or argv[0] != "lock" or argv[1] not in BUNDLES:
        usage = "usage: python -m discorecs.services.maven"
        print(f"{usage} lock {names}")
        print(f"{usage} install {names} --repository URL --cache DIR")
        return 2
    from discorecs.settings import load_settings

    bundle = BUNDLES[argv[1]]
    jars = lock(bundle, load_settings().cache_dir / "maven")
    print(f"{bundle.lock_path}: {len(jars)} jars")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
