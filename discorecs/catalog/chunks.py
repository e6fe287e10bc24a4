"""Cut a releases dump (``.xml`` or ``.xml.gz``) into chunks of whole ``<release>`` elements.

gzip does not split, so one reader decompresses the stream and cuts it at ``</release>``
boundaries; the chunks are then parsed in parallel. Memory stays bounded by the chunk size
whatever the dump's size. The reader checks the dump's frame: a ``<releases>`` root at the
start, ``</releases>`` at the end, and a gzip stream that ends where gzip says it ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from discorecs.errors import DiscorecsError

try:  # ISA-L inflates gzip several times faster than zlib, and the reader is the serial stage
    from isal import isal_zlib as inflate
except ImportError:  # pragma: no cover - isal is in requirements.txt; zlib is the fallback
    import zlib as inflate

GZIP_WBITS = 15 | 16  # a gzip header, 32 KB window

READ_SIZE = 1 << 20
DEFAULT_CHUNK_BYTES = 8 << 20
RELEASE_END = b"</release>"


class DumpError(DiscorecsError):
    """The dump is unreadable at some point; the message names the file and the offset."""


@dataclass(frozen=True)
class Chunk:
    index: int
    offset: int  # uncompressed byte offset of ``data`` in the dump
    data: bytes


class DumpReader:
    """Iterates over :class:`Chunk` s of a dump; ``compressed_read`` tracks progress."""

    def __init__(self, path: Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self.path = path
        self.chunk_bytes = chunk_bytes
        self.compressed_read = 0
        self.total_compressed = path.stat().st_size
        self.gzipped = _is_gzip(path)

    def _blocks(self, handle: BinaryIO) -> Iterator[bytes]:
        """Decompressed blocks; raises :class:`DumpError` on a truncated or corrupt gzip."""
        if not self.gzipped:
            while block := handle.read(READ_SIZE):
                self.compressed_read += len(block)
                yield block
            return
        decompressor = inflate.decompressobj(GZIP_WBITS)
        produced = 0
        while True:
            block = handle.read(READ_SIZE)
            if not block:
                break
            self.compressed_read += len(block)
            while block:
                try:
                    out = decompressor.decompress(block)
                except inflate.error as error:
                    raise DumpError(
                        f"{self.path}: corrupt gzip data near compressed byte "
                        f"{self.compressed_read:,} (XML byte {produced:,}): {error}; "
                        "download the dump again"
                    ) from None
                produced += len(out)
                yield out
                block = decompressor.unused_data if decompressor.eof else b""
                if block:
                    # Concatenated gzip members are one valid gzip file: continue with the next.
                    decompressor = inflate.decompressobj(GZIP_WBITS)
        tail = decompressor.flush()
        produced += len(tail)
        if tail:
            yield tail
        if not decompressor.eof and self.compressed_read > 0 and produced > 0:
            raise _Truncated(f"the gzip stream ends early (after {produced:,} bytes of XML)")

    def chunks(self) -> Iterator[Chunk]:
        """Whole releases in chunks of about ``chunk_bytes``; raises :class:`DumpError` if the
        dump is not a releases dump or ends early (the message says where)."""
        index = 0
        offset = 0  # uncompressed offset of the buffered bytes
        pending: list[bytes] = []  # blocks not yet cut; joined once per chunk, not per block
        pending_size = 0
        buffer = b""
        started = False
        with self.path.open("rb") as handle:
            blocks = self._blocks(handle)
            try:
                for block in blocks:
                    if not started:
                        buffer += block
                        start = buffer.find(b"<release ")
                        if start < 0:
                            start = buffer.find(b"<release>")
                        if start < 0:
                            if len(buffer) > 1 << 16:
                                raise self._not_releases(buffer)
                            continue
                        if b"<releases" not in buffer[:start]:
                            raise self._not_releases(buffer)
                        block = buffer[start:]
                        offset += start
                        started = True
                    pending.append(block)
                    pending_size += len(block)
                    if pending_size < self.chunk_bytes:
                        continue
                    buffer = b"".join(pending)
                    start = 0
                    # One decompressed block may hold several chunks' worth: cut them all, each
                    # at the last </release> inside its window (or the first after it, for a
                    # release larger than a chunk).
                    while len(buffer) - start >= self.chunk_bytes:
                        cut = buffer.rfind(RELEASE_END, start, start + self.chunk_bytes)
                        if cut < 0:
                            cut = buffer.find(RELEASE_END, start + self.chunk_bytes)
                        if cut < 0:
                            break
                        cut += len(RELEASE_END)
                        yield Chunk(index, offset, buffer[start:cut])
                        index += 1
                        offset += cut - start
                        start = cut
                    pending = [buffer[start:]]
                    pending_size = len(pending[0])
            except _Truncated as truncated:
                raise DumpError(
                    f"{self.path}: {truncated} at XML byte {offset + pending_size:,}; the file is "
                    "truncated: download it again (nothing was published)"
                ) from None
        if started:
            buffer = b"".join(pending)
        if not started:
            if b"<releases" in buffer and b"</releases>" in buffer:
                return  # a valid dump with no releases
            raise self._not_releases(buffer)
        cut = buffer.rfind(RELEASE_END)
        body = buffer[: cut + len(RELEASE_END)] if cut >= 0 else b""
        rest = buffer[len(body) :]
        if body:
            yield Chunk(index, offset, body)
        if rest.strip() != b"</releases>":
            partial = rest.find(b"<release")
            where = offset + len(body) + max(partial, 0)
            what = "a release is cut off" if partial >= 0 else "</releases> is missing"
            raise DumpError(
                f"{self.path}: the XML ends early: {what} at XML byte {where:,}; the file is "
                "truncated: download it again (nothing was published)"
            )

    def _not_releases(self, head: bytes) -> DumpError:
        shown = head[:80].decode("utf-8", "replace").replace("\n", " ")
        return DumpError(
            f"{self.path}: not a Discogs releases dump (expected a <releases> root with "
            f"<release> elements, file starts with {shown!r})"
        )


class _Truncated(Exception):
    pass


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == b"\x1f\x8b"
