"""Model artifacts on disk: content-addressed and write-once (``DATA_DIR/models/artifacts/<sha256>``).

A file's name *is* its SHA-256, so the same bytes are stored once however many versions share them, and a file
is never rewritten: :meth:`ArtifactStore.put` writes a private temporary file, fsyncs it, links it to its final
name (which fails if the name exists: nothing is overwritten) and fsyncs the directory, so a crash leaves either
the whole file or none. :meth:`ArtifactStore.get` hashes what it reads: a file changed on disk is refused
(``ModelRefused("tampered")``) before any caller parses it. The blocking file work runs on a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
from pathlib import Path

from edgeloop.errors import ModelRefused
from edgeloop.file_modes import FILE_MODE, private_dir

__all__ = ["ArtifactStore"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactStore:
    """The artifact directory of one platform (``root``: ``DATA_DIR/models/artifacts``, created 0700)."""

    def __init__(self, *, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise ValueError(f"not a SHA-256 in hex: {sha256!r}")
        return self.root / sha256

    async def put(self, data: bytes) -> str:
        """Store ``data`` under its SHA-256 (hex, returned); the same content again is a no-op."""
        return await asyncio.to_thread(self._put, data)

    async def get(self, sha256: str) -> bytes:
        """The bytes stored under ``sha256``; ``ModelRefused("tampered")`` if the file is missing or its content
        is no longer the one named."""
        return await asyncio.to_thread(self._get, sha256)

    def _put(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        final = self.path(sha)
        if final.exists():
            return sha
        private_dir(self.root)
        tmp = self.root / f".tmp-{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, FILE_MODE)  # whatever the umask
            with contextlib.suppress(FileExistsError):  # written meanwhile by another writer: the same bytes
                os.link(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return sha

    def _get(self, sha256: str) -> bytes:
        try:
            data = self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise ModelRefused("tampered", f"the artifact file {sha256[:12]}… is missing from {self.root}") from None
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise ModelRefused("tampered", f"the artifact file {sha256[:12]}… was changed on disk (its content now "
                               f"hashes to {got[:12]}…)")
        return data
