"""Get a dump onto local disk and check it against the dump's CHECKSUM file.

A SOURCE is a local path (``.xml`` or ``.xml.gz``), ``s3://bucket/key`` (boto3; honours
``AWS_ENDPOINT_URL`` and the usual AWS credentials) or an ``http(s)://`` URL. Downloads go to
``<home>/downloads/`` as ``NAME.part`` and are renamed when complete and verified; an
interrupted download resumes from where it stopped (HTTP Range, S3 ranged GET) and restarts
cleanly when the server cannot resume.

The checksum file is ``discogs_YYYYMMDD_CHECKSUM.txt`` beside the dump (same folder, prefix or
URL folder), or the one named with ``--checksum``; it lists ``<sha256> <file name>`` per line.
"""

from __future__ import annotations

import hashlib
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from discorecs.errors import DiscorecsError
from discorecs.progress import Progress, say_to_stderr

DUMP_NAME = re.compile(r"^discogs_(\d{8})_")
BLOCK = 1 << 20


class FetchError(DiscorecsError):
    """The dump could not be fetched or verified; the message says which and what to do."""


@dataclass(frozen=True)
class LocalDump:
    path: Path
    sha256: str | None  # the verified checksum, None when no checksum file was found
    checksum_file: str | None


def obtain_dump(
    source: str,
    downloads: Path,
    checksum: str | None = None,
    say: Callable[[str], None] = say_to_stderr,
) -> LocalDump:
    """Fetch ``source`` if remote, then verify it; raises :class:`FetchError`."""
    location = _location(source)
    checksum_location = _location(checksum) if checksum else location.sibling_checksum()
    expected = None
    if checksum_location is not None:
        listing = checksum_location.read_text_if_exists()
        if listing is None and checksum:
            raise FetchError(f"checksum file {checksum} does not exist")
        if listing is not None:
            expected = _expected_sha256(listing, location.name, str(checksum_location))
    if expected is None:
        say(
            f"{location.name}: no checksum file found beside it; the dump is not verified "
            "(name one with --checksum)"
        )
    if isinstance(location, _LocalFile):
        if not location.path.is_file():
            raise FetchError(
                f"dump not found: {location.path}; give a local .xml/.xml.gz path, "
                "s3://bucket/key or https:// URL"
            )
        actual = _sha256_of(location.path, say) if expected else None
        path = location.path
    else:
        path, actual = _download(location, downloads, say, want_hash=expected is not None)
    if expected and actual != expected:
        if not isinstance(location, _LocalFile):
            path.unlink(missing_ok=True)
        raise FetchError(
            f"{location.name}: checksum mismatch: sha256 is {actual}, "
            f"{checksum_location} lists {expected}; the file is corrupt or not the one listed: "
            "download it again (nothing was written)"
        )
    if expected:
        say(f"{location.name}: sha256 verified against {checksum_location}")
    return LocalDump(path, expected, str(checksum_location) if expected else None)


def _expected_sha256(listing: str, name: str, where: str) -> str:
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == name:
            digest = parts[0].lower()
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise FetchError(f"{where}: the entry for {name} is not a sha256 digest")
            return digest
    raise FetchError(f"{where} has no sha256 for {name}; is it the checksum file of this dump?")


def _sha256_of(path: Path, say: Callable[[str], None]) -> str:
    digest = hashlib.sha256()
    progress = Progress(f"verifying {path.name}", path.stat().st_size, say)
    done = 0
    with path.open("rb") as handle:
        while block := handle.read(BLOCK):
            digest.update(block)
            done += len(block)
            progress.update(done)
    return digest.hexdigest()


def _download(
    location: _Remote, downloads: Path, say: Callable[[str], None], want_hash: bool
) -> tuple[Path, str | None]:
    downloads.mkdir(parents=True, exist_ok=True)
    final = downloads / location.name
    partial = downloads / (location.name + ".part")
    total = location.size()
    if final.exists() and final.stat().st_size == total:
        say(f"{location.name}: already downloaded to {final}")
        return final, _sha256_of(final, say) if want_hash else None
    digest = hashlib.sha256()
    have = partial.stat().st_size if partial.exists() else 0
    if have > total:
        have = 0
    if have:
        with partial.open("rb") as handle:  # the hash must cover the bytes we resume after
            while block := handle.read(BLOCK):
                digest.update(block)
    progress = Progress(f"downloading {location.name}", total, say)
    if have:
        say(f"{location.name}: resuming after {have:,} bytes")
    stream, resumed = location.open_from(have)
    if have and not resumed:
        say(f"{location.name}: the server cannot resume; starting over")
        digest, have = hashlib.sha256(), 0
    with partial.open("ab" if have else "wb") as out:
        done = have
        for block in stream:
            out.write(block)
            digest.update(block)
            done += len(block)
            progress.update(done)
    if done != total:
        raise FetchError(
            f"{location.name}: download stopped at {done:,} of {total:,} bytes; run the same "
            "command again to resume"
        )
    progress.finish(done)
    partial.replace(final)
    return final, digest.hexdigest()


# -- locations -------------------------------------------------------------------------------


class _Location:
    name: str

    def sibling_checksum(self) -> _Location | None:
        match = DUMP_NAME.match(self.name)
        return self.with_name(f"discogs_{match.group(1)}_CHECKSUM.txt") if match else None

    def with_name(self, name: str) -> _Location:
        raise NotImplementedError

    def read_text_if_exists(self) -> str | None:
        raise NotImplementedError


@dataclass(frozen=True)
class _LocalFile(_Location):
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    def with_name(self, name: str) -> _Location:
        return _LocalFile(self.path.with_name(name))

    def read_text_if_exists(self) -> str | None:
        return self.path.read_text() if self.path.is_file() else None

    def __str__(self) -> str:
        return str(self.path)


class _Remote(_Location):
    def size(self) -> int:
        raise NotImplementedError

    def open_from(self, offset: int) -> tuple[Iterator[bytes], bool]:
        """A byte stream from ``offset`` and whether it really starts there (else from 0)."""
        raise NotImplementedError


@dataclass(frozen=True)
class _Http(_Remote):
    url: str

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1].split("?")[0]

    def with_name(self, name: str) -> _Location:
        return _Http(self.url.rsplit("/", 1)[0] + "/" + name)

    def _open(self, headers: dict[str, str] | None = None, method: str = "GET"):
        request = urllib.request.Request(self.url, headers=headers or {}, method=method)
        try:
            return urllib.request.urlopen(request, timeout=60)
        except urllib.error.HTTPError as error:
            raise FetchError(f"{self.url}: HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise FetchError(f"{self.url}: cannot connect ({reason}); check the URL") from None

    def read_text_if_exists(self) -> str | None:
        try:
            with self._open() as response:
                return response.read().decode("utf-8", "replace")
        except FetchError as error:
            if "HTTP 404" in str(error):
                return None
            raise

    def size(self) -> int:
        with self._open(method="HEAD") as response:
            length = response.headers.get("Content-Length")
        if length is None:
            raise FetchError(f"{self.url}: the server does not say how large the file is")
        return int(length)

    def open_from(self, offset: int) -> tuple[Iterator[bytes], bool]:
        response = self._open({"Range": f"bytes={offset}-"} if offset else None)

        def blocks() -> Iterator[bytes]:
            with response:
                while block := response.read(BLOCK):
                    yield block

        return blocks(), offset > 0 and response.status == 206

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class _S3(_Remote):
    bucket: str
    key: str

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def with_name(self, name: str) -> _Location:
        prefix = self.key.rsplit("/", 1)[0] + "/" if "/" in self.key else ""
        return _S3(self.bucket, prefix + name)

    def _client(self):
        import boto3  # only needed for s3:// sources

        return boto3.client("s3")

    def _call(self, what: str, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client(), what)(Bucket=self.bucket, Key=self.key, **kwargs)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(str(self)) from None
            raise FetchError(f"{self}: {error}") from None
        except BotoCoreError as error:
            raise FetchError(
                f"{self}: {error}; check AWS credentials and AWS_ENDPOINT_URL"
            ) from None

    def read_text_if_exists(self) -> str | None:
        try:
            return self._call("get_object")["Body"].read().decode("utf-8", "replace")
        except FileNotFoundError:
            return None

    def size(self) -> int:
        try:
            return int(self._call("head_object")["ContentLength"])
        except FileNotFoundError:
            raise FetchError(f"dump not found: {self}") from None

    def open_from(self, offset: int) -> tuple[Iterator[bytes], bool]:
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        body = self._call("get_object", **extra)["Body"]
        return body.iter_chunks(BLOCK), offset > 0

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def _location(source: str) -> _Location:
    if source.startswith(("http://", "https://")):
        return _Http(source)
    if source.startswith("s3://"):
        bucket, _, key = source[len("s3://") :].partition("/")
        if not bucket or not key:
            raise FetchError(f"{source}: an S3 location is s3://bucket/key")
        return _S3(bucket, key)
    if source.startswith("file://"):
        source = source[len("file://") :]
    return _LocalFile(Path(source).expanduser())
