"""The local cache of downloaded versions, which outlives the process.

One directory per S3 location (`<root>/<bucket>-<hash of endpoint, bucket and prefix>/`), in it
one directory per downloaded version listing: `<version>.<digest>/`, where the digest covers
every object's key, size and ETag. A version is downloaded into a temporary directory next to
it and renamed into place once complete, so a process killed mid-download never leaves a half
version under a published name: a restart finds either the whole version (and downloads nothing)
or none of it. A changed object changes the digest, so the new files land in a new directory and
the old one serves until they are loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

log = logging.getLogger("dropin.s3")

TMP_PREFIX = ".download-"
# a download directory left this long by a process that died is removed
STALE_DOWNLOAD_SECONDS = 3600.0
# a version no longer served is removed once its download is this old: another process sharing
# the cache (--workers N) may have just published it and be about to serve it
SUPERSEDED_SECONDS = 60.0

Listing = Mapping[str, tuple[int, str]]  # relative file path -> (size, ETag)


def default_root() -> Path:
    """Under the temporary directory (TMPDIR): writable on a read-only root file system with a
    writable /tmp or an emptyDir there, and kept across container restarts in the same pod."""
    return Path(tempfile.gettempdir()) / "dropin-s3-cache"


def digest(files: Listing) -> str:
    """What a version's listing is: changes whenever a key, a size or an ETag does."""
    text = json.dumps(sorted((name, size, etag) for name, (size, etag) in files.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class VersionCache:
    """The cached versions of one S3 location."""

    def __init__(self, root: Path, location_id: str, label: str) -> None:
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:60]
        self.directory = Path(root) / f"{name}-{hashlib.sha256(location_id.encode()).hexdigest()[:12]}"

    def path(self, number: int, listing_digest: str) -> Path:
        return self.directory / f"{number}.{listing_digest}"

    def publish(self, number: int, listing_digest: str, fill: Callable[[Path], None]) -> Path:
        """Run `fill(temporary directory)`, then rename the directory into place. Another process
        sharing the cache may publish the same version first: its copy is as good."""
        target = self.path(number, listing_digest)
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{number}.", dir=self.directory))
        try:
            fill(temporary)
            temporary.chmod(0o755)
            try:
                os.rename(temporary, target)
            except OSError:
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
        return target

    def published(self, number: int) -> Path | None:
        """A whole download of version `number`, whichever listing it was made from, if any."""
        return next((p for p in sorted(self.directory.glob(f"{number}.*")) if p.is_dir()), None)

    def prune(self, keep: Iterable[Path]) -> None:
        """Remove the published versions but `keep` (once a minute old), and downloads abandoned long ago."""
        kept = {p.name for p in keep}
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return
        now = time.time()
        for entry in entries:
            if entry.name in kept:
                continue
            # temporary ones (".download-", ".names-") may be another process's work in progress
            age = STALE_DOWNLOAD_SECONDS if entry.name.startswith(".") else SUPERSEDED_SECONDS
            try:
                if now - entry.stat().st_mtime <= age:
                    continue
            except OSError:
                continue
            log.debug("removing %s from the S3 cache", entry.path)
            shutil.rmtree(entry.path, ignore_errors=True)
