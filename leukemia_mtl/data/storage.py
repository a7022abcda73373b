"""Object storage (MinIO or any S3 endpoint) through the `minio` client.

Guarantees, each tested against a real S3 server on 127.0.0.1:
- an upload is one PUT (or a multipart upload completed only at the end), so a partial object is
  never visible; a small file's PUT is verified by its ETag (the server's MD5 of what it
  received), a large one's (or one whose ETag is no MD5) by a HEAD against size and stored sha256;
- a download streams into a temporary sibling and is renamed only once its size and sha256
  match, so a half-written file never sits under its final name;
- transient failures (connection refused or reset, timeouts, 5xx, SlowDown, a connection cut
  mid-transfer) are retried with exponential backoff a bounded number of times, then raise one
  StorageError; refusals (wrong keys, AccessDenied, a missing bucket) are not retried, and say
  which variable or bucket to check;
- an object key can never write outside the target directory;
- credentials come from the environment, live only in the client, never in repr, logs or errors.

Environment: MINIO_ENDPOINT (host:port or http(s)://host:port), MINIO_ACCESS_KEY,
MINIO_SECRET_KEY, optional MINIO_SECURE (true/false, default from the URL scheme or false),
MINIO_REGION. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL are read when the
MINIO_ names are absent.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TypeVar
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from leukemia_mtl.config import StorageConfig
from leukemia_mtl.errors import StorageError
from leukemia_mtl.io_utils import atomic_writer, file_digests, sha256_file

log = logging.getLogger(__name__)

SHA256_META = "sha256"  # stored as x-amz-meta-sha256
_TRANSIENT_S3_CODES = {"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed"}
# What a person does about the refusals that retrying cannot fix (the variables' names, never their values).
_S3_HINTS = {
    "InvalidAccessKeyId": "the server does not know this access key: check MINIO_ACCESS_KEY",
    "SignatureDoesNotMatch": "the secret key does not match the access key: check MINIO_SECRET_KEY",
    "AccessDenied": "these credentials may not do this here (a read-only bucket or policy?)",
    "NoSuchBucket": "create it (python -m leukemia_mtl buckets NAME) or fix the URI",
}
T = TypeVar("T")


def is_s3_uri(value: str) -> bool:
    return value.startswith("s3://")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix")."""
    if not is_s3_uri(uri):
        raise StorageError(f"{uri!r} is not an s3:// URI")
    rest = uri[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} names no bucket (expected s3://bucket/prefix)")
    check_bucket_name(bucket)
    return bucket, prefix.strip("/")


BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def check_bucket_name(name: str) -> str:
    """S3's bucket naming rules, checked here so a bad name is one line, not the client's traceback."""
    if not BUCKET_NAME.match(name) or ".." in name:
        raise StorageError(
            f"bucket name {name!r} is not valid: 3-63 characters of lower-case letters, digits, "
            "'.' and '-', starting and ending with a letter or digit"
        )
    return name


def _endpoint(raw: str, variable: str) -> tuple[str, bool | None]:
    """host[:port] and whether the scheme says TLS (None without a scheme); refuses what the client
    would silently drop or misread: credentials, a path, a broken address."""
    text = raw if "://" in raw else f"//{raw}"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise StorageError(f"{variable} is not a valid endpoint ({exc})") from None
    if parts.username is not None or parts.password is not None:
        raise StorageError(
            f"{variable} carries credentials; give them as MINIO_ACCESS_KEY and MINIO_SECRET_KEY instead "
            "(not shown here)"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise StorageError(
            f"{variable} has a path ({parts.path or parts.query}); the S3 client talks to the host "
            "itself, so give host[:port] only"
        )
    if "://" in raw and parts.scheme not in ("http", "https"):
        raise StorageError(f"{variable} has scheme {parts.scheme!r}; use http:// or https://")
    if not parts.hostname:
        raise StorageError(f"{variable} names no host")
    return parts.netloc, (parts.scheme == "https") if "://" in raw else None


# every variable StorageSettings.from_env reads (a runner that starts tasks elsewhere passes these on)
STORAGE_ENV = (
    "MINIO_ENDPOINT",
    "MINIO_ACCESS_KEY",
    "MINIO_SECRET_KEY",
    "MINIO_SECURE",
    "MINIO_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)


@dataclass(frozen=True)
class StorageSettings:
    endpoint: str
    secure: bool
    region: str | None
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StorageSettings:
        env = os.environ if env is None else env
        raw = env.get("MINIO_ENDPOINT") or env.get("AWS_ENDPOINT_URL") or ""
        access = env.get("MINIO_ACCESS_KEY") or env.get("AWS_ACCESS_KEY_ID") or ""
        secret = env.get("MINIO_SECRET_KEY") or env.get("AWS_SECRET_ACCESS_KEY") or ""
        missing = [
            name
            for name, value in (("MINIO_ENDPOINT", raw), ("MINIO_ACCESS_KEY", access), ("MINIO_SECRET_KEY", secret))
            if not value
        ]
        if missing:
            raise StorageError(f"object storage is not configured: set {', '.join(missing)} in the environment")
        variable = "MINIO_ENDPOINT" if env.get("MINIO_ENDPOINT") else "AWS_ENDPOINT_URL"
        endpoint, scheme_secure = _endpoint(raw.strip(), variable)
        secure = bool(scheme_secure)
        if "MINIO_SECURE" in env:
            secure = env["MINIO_SECURE"].strip().lower() in ("1", "true", "yes")
        return cls(
            endpoint=endpoint,
            secure=secure,
            region=env.get("MINIO_REGION") or None,
            access_key=access,
            secret_key=secret,
        )


def safe_local_path(target_dir: Path, relative_key: str) -> Path:
    """Where `relative_key` lands under `target_dir`; refuses keys that would escape it."""
    posix = PurePosixPath(relative_key)
    if not relative_key or posix.is_absolute() or ".." in posix.parts or "\\" in relative_key or "\x00" in relative_key:
        raise StorageError(f"object key {relative_key!r} would write outside {target_dir}; refused")
    root = target_dir.resolve()
    local = (root / Path(*posix.parts)).resolve()
    if root != local and root not in local.parents:
        raise StorageError(f"object key {relative_key!r} would write outside {target_dir}; refused")
    return local


class ObjectStore:
    """Verified, retried, atomic transfers between a local folder and an S3 bucket/prefix."""

    def __init__(self, settings: StorageSettings, cfg: StorageConfig | None = None) -> None:
        self.cfg = cfg or StorageConfig()
        self.settings = settings
        # urllib3's own retries are off: one policy (ours) decides, so attempts stay bounded.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=self.cfg.connect_timeout_seconds, read=self.cfg.read_timeout_seconds),
            retries=False,
        )
        self.client = Minio(
            settings.endpoint,
            access_key=settings.access_key,
            secret_key=settings.secret_key,
            secure=settings.secure,
            region=settings.region,
            http_client=http,
        )

    @classmethod
    def from_env(cls, cfg: StorageConfig | None = None) -> ObjectStore:
        return cls(StorageSettings.from_env(), cfg)

    def _where(self, bucket: str, key: str = "") -> str:
        scheme = "https" if self.settings.secure else "http"
        return f"s3://{bucket}/{key} at {scheme}://{self.settings.endpoint}"

    def retrying(self, what: str, operation: Callable[[], T]) -> T:
        """`operation` under the store's retry policy, its failure one StorageError naming `what`."""
        return self._retry(what, operation)

    def _retry(self, what: str, operation: Callable[[], T]) -> T:
        delay = self.cfg.backoff_seconds
        for attempt in range(1, self.cfg.attempts + 1):
            try:
                return operation()
            except S3Error as exc:
                if exc.code not in _TRANSIENT_S3_CODES or attempt == self.cfg.attempts:
                    hint = f"; {_S3_HINTS[exc.code]}" if exc.code in _S3_HINTS else ""
                    raise StorageError(f"{what}: {exc.code} ({exc.message}){hint}") from None
                reason = exc.code
            except (
                urllib3.exceptions.HTTPError,
                ServerError,
                InvalidResponseError,
                ConnectionError,
                TimeoutError,
            ) as exc:
                if attempt == self.cfg.attempts:
                    raise StorageError(
                        f"{what}: failed after {attempt} attempts ({type(exc).__name__}: {_short(exc)})"
                    ) from None
                reason = type(exc).__name__
            sleep = min(delay, self.cfg.backoff_max_seconds) * (1 + 0.25 * random.random())
            log.warning("%s: %s, retry %d/%d in %.1fs", what, reason, attempt, self.cfg.attempts - 1, sleep)
            time.sleep(sleep)
            delay *= 2
        raise AssertionError("unreachable")

    # -- single objects -------------------------------------------------------------------

    def upload_file(self, local: Path | str, bucket: str, key: str) -> str:
        """PUT one file and check what the server stored; returns the sha256.

        A small file's PUT is verified by its ETag, the MD5 the server computed over the bytes it
        received (no second round trip); a large file (where an MD5 pass costs more than a round
        trip), or an upload whose ETag is no MD5 (multipart, encryption), by a HEAD against the
        size and the sha256 stored as metadata.
        """
        local = Path(local)
        size = local.stat().st_size
        small = size <= self.cfg.etag_verify_max_bytes
        digests = file_digests(local, ("sha256", "md5") if small else ("sha256",))  # one pass over the file
        digest = digests["sha256"]
        where = self._where(bucket, key)
        result = self._retry(
            f"upload {local} to {where}",
            lambda: self.client.fput_object(bucket, key, str(local), metadata={SHA256_META: digest}),
        )
        if small and (result.etag or "").strip('"').lower() == digests["md5"]:
            return digest
        stat = self._retry(f"verify {where}", lambda: self.client.stat_object(bucket, key))
        stored = _stored_sha256(stat.metadata)
        if stat.size != size or stored != digest:
            raise StorageError(
                f"upload of {local} to {where} did not verify (size {stat.size} vs {size}, sha256 {stored} vs {digest})"
            )
        return digest

    def download_file(self, bucket: str, key: str, local: Path | str) -> Path:
        """GET one object into a temporary sibling; rename only if size and sha256 check out."""
        local = Path(local)
        where = self._where(bucket, key)
        local.parent.mkdir(parents=True, exist_ok=True)

        def fetch() -> Path:
            response = self.client.get_object(bucket, key)
            digest, size = hashlib.sha256(), 0
            try:
                with atomic_writer(local) as handle:  # a mismatch raises inside: nothing under the final name
                    for chunk in response.stream(1 << 20):
                        handle.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                    expected_size = int(response.headers.get("Content-Length", size))
                    expected_sha = _stored_sha256(response.headers)
                    if size != expected_size or (expected_sha and expected_sha != digest.hexdigest()):
                        raise urllib3.exceptions.ProtocolError(f"incomplete body ({size} of {expected_size} bytes)")
            finally:
                response.close()
                response.release_conn()
            return local

        return self._retry(f"download {where} to {local}", fetch)

    # -- prefixes -------------------------------------------------------------------------

    def list_keys(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        listing = prefix.rstrip("/") + "/" if prefix else ""
        where = self._where(bucket, listing)
        return self._retry(
            f"list {where}",
            lambda: [
                (o.object_name, o.size)
                for o in self.client.list_objects(bucket, prefix=listing, recursive=True)
                if not o.is_dir
            ],
        )

    def download_prefix(
        self,
        uri: str,
        target_dir: Path | str,
        *,
        on_object: Callable[[str], None] | None = None,
    ) -> list[Path]:
        """Mirror s3://bucket/prefix into target_dir; files already there with the same content are kept."""
        bucket, prefix = parse_s3_uri(uri)
        target = Path(target_dir)
        target.mkdir(parents=True, exist_ok=True)
        keys = self.list_keys(bucket, prefix)
        if not keys:
            raise StorageError(f"nothing found under {self._where(bucket, prefix)}")
        plan = []
        for key, size in keys:
            relative = key[len(prefix) :].lstrip("/") if prefix else key
            too_long = next((part for part in relative.split("/") if len(part.encode()) > 255), None)
            if too_long is not None:
                raise StorageError(
                    f"object key {key!r}: the name {too_long[:40]!r}... is {len(too_long.encode())} bytes, "
                    "over a file system's 255; rename the object"
                )
            plan.append((key, size, safe_local_path(target, relative)))  # refuse before writing anything
        locals_ = {local for _, _, local in plan}
        for key, _, local in plan:
            if any(parent in locals_ for parent in local.parents):  # 'L1' and 'L1/a.png': a file and a folder at once
                clash = next(k for k, _, other in plan if other in local.parents)
                raise StorageError(
                    f"object keys {clash!r} and {key!r} need {clash.rsplit('/', 1)[-1]!r} to be a file and a "
                    "folder at once; rename one"
                )
        written = []
        for key, size, local in plan:
            if not (local.is_file() and local.stat().st_size == size and self._same_content(bucket, key, local)):
                self.download_file(bucket, key, local)
            written.append(local)
            if on_object is not None:
                on_object(key)
        log.info("downloaded %d objects from %s to %s", len(written), uri, target)
        return written

    def _same_content(self, bucket: str, key: str, local: Path) -> bool:
        stat = self._retry(f"stat {self._where(bucket, key)}", lambda: self.client.stat_object(bucket, key))
        stored = _stored_sha256(stat.metadata)
        return stored is not None and stored == sha256_file(local)

    def upload_dir(
        self, local_dir: Path | str, uri: str, *, on_object: Callable[[str], None] | None = None
    ) -> list[str]:
        """Upload every file under local_dir to s3://bucket/prefix/<relative path>, each verified."""
        bucket, prefix = parse_s3_uri(uri)
        root = Path(local_dir)
        keys = []
        for path in _walk_files(root):
            key = "/".join(filter(None, [prefix, path.relative_to(root).as_posix()]))
            self.upload_file(path, bucket, key)
            keys.append(key)
            if on_object is not None:
                on_object(key)
        return keys

    def ensure_bucket(self, bucket: str) -> None:
        check_bucket_name(bucket)
        where = self._where(bucket)
        if not self._retry(f"check {where}", lambda: self.client.bucket_exists(bucket)):
            self._retry(f"create {where}", lambda: self.client.make_bucket(bucket))


def _walk_files(root: Path) -> Iterator[Path]:
    return iter(sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".part")))


def _stored_sha256(headers: Mapping[str, str] | None) -> str | None:
    if not headers:
        return None
    for name, value in headers.items():
        if name.lower() in (f"x-amz-meta-{SHA256_META}", SHA256_META):
            return value
    return None


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."
