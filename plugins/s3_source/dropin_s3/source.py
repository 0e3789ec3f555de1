"""`s3://` model base paths: versions listed from S3, downloaded into a local cache, served from it.

Every `versions()` call (each rescan, every --file_system_poll_wait_seconds) costs one
ListObjectsV2 request per 1000 objects under the model's prefix, and nothing else while the
bucket does not change. A version is downloaded (one GetObject per file) only when

- its listing (every key, size and ETag) is the same as on the previous listing: S3 has no
  atomic rename, so a version being uploaded file by file keeps changing until it is whole;
- a backend claims its file names (an IR's .xml with its .bin, an .onnx, ...): the installed
  backends are asked, on empty files of the same names, exactly as they are asked to claim a
  local directory, so that no format is hard-coded here.

A version whose objects change goes into a new cache directory (its changed objects
downloaded, the others linked from the previous download): a new fingerprint, so the core
reloads it; until then the previous download keeps serving. A listing
that fails (bucket missing, access denied, endpoint unreachable) raises OSError: what is loaded
keeps serving and the model's status says why. A prefix with no objects at all is a base path
that does not exist (FileNotFoundError): its versions retire.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from dropin.sources import ModelSource, parse_version, preferred_spelling

from . import location as s3location
from .cache import Listing, VersionCache, default_root, digest

if TYPE_CHECKING:
    from dropin.backend import Backend
    from dropin.registry import Registry

log = logging.getLogger("dropin.s3")

# At start-up there is no previous listing to compare with: a version not in the cache yet is
# listed a second time after this pause before it is downloaded.
FIRST_LISTING_PAUSE_SECONDS = 1.0
_DOWNLOAD_CHUNK = 1 << 20


class S3Source(ModelSource):
    """One model's versions under `s3://[host:port/]bucket/prefix/<version>/...`."""

    name = "s3"
    #: where versions are downloaded (the plugin's --s3_cache_dir)
    cache_root: ClassVar[Path] = default_root()
    #: the server's backends, asked whether a version's files are complete (set by the plugin)
    backends: ClassVar[Registry[Backend] | None] = None

    def __init__(self, base_path: str) -> None:
        super().__init__(base_path)
        self._invalid: str | None = None
        try:
            self.location = s3location.parse(base_path)
        except ValueError as exc:
            self._invalid = str(exc)
            self.location = s3location.S3Location("", "", None)
        endpoint = s3location.endpoint_url(self.location) or "aws"
        self.cache = VersionCache(
            self.cache_root, f"{endpoint}|{self.location.bucket}|{self.location.prefix}",
            f"{self.location.bucket}-{self.location.prefix.rstrip('/').replace('/', '_')}",
        )
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._seen: dict[int, str] | None = None  # the previous listing's digests (None: no listing yet)
        self._served: dict[int, Path] = {}  # what the last call returned
        self._listings: dict[Path, Listing] = {}  # the listing each served download was made from
        self._said: set[tuple[str, int, str]] = set()  # log lines said once per version listing

    @classmethod
    def claims(cls, base_path: str) -> bool:
        return base_path.startswith(s3location.SCHEME)

    # -- the contract --------------------------------------------------------------------------

    def versions(self) -> dict[int, Path]:
        if self._invalid is not None:
            raise OSError(self._invalid)
        try:
            listing = self._list()
        except FileNotFoundError:
            self._served = {}
            self.cache.prune([])
            raise
        first = self._seen is None
        if first and any(not self.cache.path(n, digest(f)).is_dir() for n, (_, f) in listing.items()):
            self._seen = {n: digest(f) for n, (_, f) in listing.items()}
            time.sleep(FIRST_LISTING_PAUSE_SECONDS)
            listing = self._list()
        found: dict[int, Path] = {}
        for number, (name, files) in listing.items():
            listed = digest(files)
            path = self.cache.path(number, listed)
            previous = self._served.get(number)
            if not path.is_dir() and (self._seen or {}).get(number) == listed and self._complete(number, files):
                known = (previous, self._listings[previous]) if previous in self._listings else None
                self._download(number, name, listed, files, known)
            if path.is_dir():
                found[number] = path
                self._listings[path] = files
            elif previous is not None and previous.is_dir():
                found[number] = previous  # changing or incomplete: the last whole download serves
            elif (previous is not None or first) and (other := self.cache.published(number)) is not None:
                # a whole download of an earlier listing: made before a restart, or by another
                # process sharing the cache (--workers N) that replaced ours meanwhile
                found[number] = other
        self._seen = {n: digest(f) for n, (_, f) in listing.items()}
        self._served = found
        self._listings = {p: f for p, f in self._listings.items() if p in found.values()}
        self.cache.prune(found.values())
        return found

    def fingerprint(self, version_dir: Path) -> Hashable | None:
        """The version's listing digest (in its cache directory's name): a changed object is a
        new download in a new directory, so a reload."""
        return version_dir.name

    # -- S3 ------------------------------------------------------------------------------------

    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = s3location.make_client(self.location)
            return self._client

    def _list(self) -> dict[int, tuple[str, Listing]]:
        """{version: (directory name, {file: (size, ETag)})} under the prefix, one request per
        1000 objects."""
        prefix = self.location.prefix
        names: dict[int, dict[str, dict[str, tuple[int, str]]]] = {}
        empty = True
        with translate_errors(self.location):
            pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.location.bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", ()):
                    empty = False
                    key: str = obj["Key"]
                    directory, _, rest = key[len(prefix):].partition("/")
                    number = parse_version(directory)
                    if number is None or not rest or rest.endswith("/"):
                        continue  # not in a version directory, or a "directory" marker object
                    if not _safe(rest):
                        self._once("unsafe", number, f"ignoring s3 object {key!r}: not a plain relative path")
                        continue
                    files = names.setdefault(number, {}).setdefault(directory, {})
                    files[rest] = (int(obj["Size"]), str(obj["ETag"]))
        if empty:
            raise FileNotFoundError(f"no objects under {self.location}")
        listing: dict[int, tuple[str, Listing]] = {}
        for number, spellings in names.items():
            chosen = preferred_spelling(number, list(spellings))
            listing[number] = (chosen, spellings[chosen])
        return listing

    def _download(
        self, number: int, name: str, listed: str, files: Listing, previous: tuple[Path, Listing] | None
    ) -> None:
        """Fetch every file of a version into the cache (atomically); files unchanged since the
        `previous` download of it (same size and ETag) are linked from there instead. A file that
        changed since it was listed (ETag) or any failure leaves nothing published: the next
        poll retries."""
        client = self.client()
        base = f"{self.location.prefix}{name}/"
        started = time.monotonic()
        linked: list[str] = []

        def fill(directory: Path) -> None:
            for rel, (size, etag) in files.items():
                target = directory / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                if previous is not None and previous[1].get(rel) == (size, etag):
                    try:
                        os.link(previous[0] / rel, target)  # the cache never rewrites a file: sharing is safe
                        linked.append(rel)
                        continue
                    except OSError:
                        pass  # gone meanwhile, or another file system: download it
                body = client.get_object(Bucket=self.location.bucket, Key=base + rel, IfMatch=etag)["Body"]
                with open(target, "wb") as out:
                    shutil.copyfileobj(body, out, _DOWNLOAD_CHUNK)
                if target.stat().st_size != size:
                    raise OSError(f"{base + rel}: got {target.stat().st_size} bytes, listed {size}")

        try:
            with translate_errors(self.location):
                self.cache.publish(number, listed, fill)
        except Exception as exc:  # whatever failed, nothing was published: the next poll retries
            self._once("download", number, f"version {number}: download from {self.location} failed, retrying at "
                        f"the next poll: {exc}", listed, level=logging.WARNING)
            return
        total = sum(size for rel, (size, _) in files.items() if rel not in linked)
        log.info("%s version %d: downloaded %d files (%d bytes) in %.0f ms%s", self.location, number,
                 len(files) - len(linked), total, (time.monotonic() - started) * 1000,
                 f", {len(linked)} unchanged ones kept" if linked else "")

    def _complete(self, number: int, files: Listing) -> bool:
        """True if an installed backend claims these file names (asked on empty files of the
        same names, as backends look at names only), or if no backend can be asked."""
        backends = self.backends
        if backends is None or not len(backends):
            return True
        self.cache.directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".names-", dir=self.cache.directory) as names:
            for rel in files:
                path = Path(names, rel)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            if any(cls.claims(Path(names)) for _, cls in backends.items()):
                return True
        listed = ", ".join(sorted(files)) or "nothing"
        self._once("incomplete", number, f"{self.location} version {number}: no backend can load its files yet "
                   f"({listed}); waiting for the rest", digest(files))
        return False

    def _once(self, kind: str, number: int, message: str, listed: str = "", level: int = logging.INFO) -> None:
        if (kind, number, listed) not in self._said:
            self._said.add((kind, number, listed))
            log.log(level, "%s", message)


def _safe(rel: str) -> bool:
    """A key below a version directory that stays inside it when written to disk."""
    return "\\" not in rel and all(part not in ("", ".", "..") for part in rel.split("/"))


@contextmanager
def translate_errors(location: s3location.S3Location) -> Iterator[None]:
    """botocore's exceptions as OSErrors that say what is wrong, for the model's status."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", "")) or str(exc)
        if code == "NoSuchBucket":
            raise OSError(f"bucket {location.bucket!r} does not exist ({location})") from None
        if code in _DENIED or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 403:
            raise PermissionError(f"access to {location} denied: {code}: {message}") from None
        raise OSError(f"{location}: {code}: {message}") from None
    except BotoCoreError as exc:  # endpoint unreachable, timeouts, ...
        raise OSError(f"cannot reach S3 for {location}: {exc}") from None


_DENIED = {
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "AllAccessDisabled",
}
