"""Object storage against a real S3 server (moto) on 127.0.0.1 through the real minio client."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import pytest

from conftest import PLANTED_ACCESS_KEY, PLANTED_SECRET_KEY
from leukemia_mtl.config import StorageConfig
from leukemia_mtl.data.storage import ObjectStore, StorageSettings, parse_s3_uri, safe_local_path
from leukemia_mtl.errors import StorageError

FAST = StorageConfig(attempts=3, backoff_seconds=0.05, backoff_max_seconds=0.2, connect_timeout_seconds=1, read_timeout_seconds=5)


@pytest.fixture
def store(s3_env):
    store = ObjectStore(StorageSettings.from_env(), FAST)
    store.ensure_bucket("cells")
    return store


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_upload_then_download_round_trips_every_byte(store, synthetic_root, tmp_path):
    keys = store.upload_dir(synthetic_root, "s3://cells/runs/a")
    assert len(keys) == len(_tree(synthetic_root))
    stat = store.client.stat_object("cells", keys[0])
    assert stat.metadata.get("x-amz-meta-sha256")  # what downloads verify against
    store.download_prefix("s3://cells/runs/a", tmp_path / "back")
    assert _tree(tmp_path / "back") == _tree(synthetic_root)


@pytest.mark.parametrize("etag_verify_max_bytes", [1 << 20, 1 << 30])
def test_a_multipart_upload_is_verified_and_round_trips(s3_env, tmp_path, etag_verify_max_bytes):
    """Over 5 MiB minio uploads in parts: verified by HEAD as a large file, and also when the
    size limit sends it down the ETag path, whose multipart ETag is no MD5."""
    store = ObjectStore(StorageSettings.from_env(), dataclasses.replace(FAST, etag_verify_max_bytes=etag_verify_max_bytes))
    store.ensure_bucket("cells")
    big = tmp_path / "big.bin"
    big.write_bytes(hashlib.sha256(b"seed").digest() * (12 * 2**20 // 32))  # 12 MiB
    digest = store.upload_file(big, "cells", "big/big.bin")
    assert digest == hashlib.sha256(big.read_bytes()).hexdigest()
    assert "-" in store.client.stat_object("cells", "big/big.bin").etag  # really multipart
    store.download_file("cells", "big/big.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()


def test_download_rerun_is_idempotent_and_skips_unchanged_files(store, synthetic_root, tmp_path):
    store.upload_dir(synthetic_root, "s3://cells/p")
    target = tmp_path / "mirror"
    store.download_prefix("s3://cells/p", target)
    stamps = {p: p.stat().st_mtime_ns for p in target.rglob("*") if p.is_file()}
    store.download_prefix("s3://cells/p", target)
    assert {p: p.stat().st_mtime_ns for p in target.rglob("*") if p.is_file()} == stamps


def test_a_corrupted_local_copy_is_replaced(store, synthetic_root, tmp_path):
    store.upload_dir(synthetic_root, "s3://cells/p")
    target = tmp_path / "mirror"
    store.download_prefix("s3://cells/p", target)
    victim = target / "ALL_IDB1" / "labels.csv"
    original = victim.read_bytes()
    victim.write_bytes(original[::-1])  # same size, wrong content
    store.download_prefix("s3://cells/p", target)
    assert victim.read_bytes() == original


@pytest.mark.parametrize("key", ["../../escape.txt", "a/../../escape.txt", "/abs/escape.txt", "a\\..\\escape.txt"])
def test_keys_that_escape_the_target_are_refused_before_any_write(store, s3_env, tmp_path, key):
    import boto3  # plants keys our own client would refuse to write, as a hostile bucket could hold

    raw = boto3.client(
        "s3", endpoint_url=s3_env["MINIO_ENDPOINT"], region_name="us-east-1",
        aws_access_key_id=PLANTED_ACCESS_KEY, aws_secret_access_key=PLANTED_SECRET_KEY,
    )
    raw.put_object(Bucket="cells", Key="bad/ok.txt", Body=b"ok")
    with pytest.raises(StorageError, match="would write outside"):
        safe_local_path(tmp_path / "target", key)
    if not key.startswith("/"):
        raw.put_object(Bucket="cells", Key=f"bad/{key}", Body=b"evil")
        with pytest.raises(StorageError, match="would write outside"):
            store.download_prefix("s3://cells/bad", tmp_path / "target")
        assert not (tmp_path / "escape.txt").exists()
        assert not list((tmp_path / "target").rglob("*.txt"))  # refused before anything was written


def test_server_going_away_mid_run_gives_a_clear_error_and_no_partial_files(s3_server, store, synthetic_root, tmp_path, caplog):
    store.upload_dir(synthetic_root, "s3://cells/p")
    target = tmp_path / "mirror"
    done: list[str] = []

    def stop_after_three(key: str) -> None:
        done.append(key)
        if len(done) == 3:
            s3_server.stop()
            s3_server.stopped = True

    with caplog.at_level(logging.WARNING), pytest.raises(StorageError, match="failed after 3 attempts") as info:
        store.download_prefix("s3://cells/p", target, on_object=stop_after_three)
    assert s3_server.endpoint.split("//")[1] in str(info.value)  # says where
    files = [p for p in target.rglob("*") if p.is_file()]
    assert len(files) == 3
    assert not [p for p in target.rglob("*") if ".part" in p.name]  # no half-written files anywhere
    source = _tree(synthetic_root)
    assert all(source[p.relative_to(target).as_posix()] == hashlib.sha256(p.read_bytes()).hexdigest() for p in files)
    assert "retry 1/2" in caplog.text  # bounded retries with backoff, then the error


def test_server_down_at_start(s3_env, s3_server, tmp_path):
    s3_server.stop()
    s3_server.stopped = True
    store = ObjectStore(StorageSettings.from_env(), FAST)
    with pytest.raises(StorageError, match="failed after 3 attempts"):
        store.download_prefix("s3://cells/p", tmp_path)


def test_wrong_credentials_and_missing_bucket_are_clear(s3_env, store, tmp_path, monkeypatch):
    with pytest.raises(StorageError, match="NoSuchBucket"):
        store.download_prefix("s3://no-such-bucket/x", tmp_path)
    with pytest.raises(StorageError, match="nothing found under s3://cells/empty"):
        store.download_prefix("s3://cells/empty", tmp_path)


def test_credentials_never_appear_in_errors_logs_or_repr(s3_server, s3_env, synthetic_root, tmp_path, caplog):
    store = ObjectStore(StorageSettings.from_env(), FAST)
    store.ensure_bucket("cells")
    store.upload_dir(synthetic_root / "ALL_IDB2", "s3://cells/c")
    messages = [repr(store.settings), repr(StorageSettings.from_env())]
    with caplog.at_level(logging.DEBUG):
        for uri in ("s3://missing-bucket/x", "s3://cells/none"):
            with pytest.raises(StorageError) as info:
                store.download_prefix(uri, tmp_path)
            messages.append(str(info.value))
        s3_server.stop()
        s3_server.stopped = True
        with pytest.raises(StorageError) as info:
            store.download_prefix("s3://cells/c", tmp_path / "x")
        messages.append(str(info.value))
    text = "\n".join(messages) + caplog.text
    assert PLANTED_SECRET_KEY not in text
    assert PLANTED_ACCESS_KEY not in text


def test_missing_configuration_names_the_variables(monkeypatch):
    for name in ("MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(StorageError, match="set MINIO_ENDPOINT, MINIO_ACCESS_KEY, MINIO_SECRET_KEY"):
        StorageSettings.from_env()


def test_endpoint_forms():
    env = {"MINIO_ENDPOINT": "https://minio.example:9000", "MINIO_ACCESS_KEY": "a", "MINIO_SECRET_KEY": "b"}
    settings = StorageSettings.from_env(env)
    assert (settings.endpoint, settings.secure) == ("minio.example:9000", True)
    env.update({"MINIO_ENDPOINT": "minio-service.kubeflow:9000", "MINIO_SECURE": "false"})
    assert StorageSettings.from_env(env).secure is False
    aws = {"AWS_ENDPOINT_URL": "http://h:1", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}
    assert StorageSettings.from_env(aws).endpoint == "h:1"


@pytest.mark.parametrize("uri, expected", [("s3://b/p/q/", ("b", "p/q")), ("s3://b", ("b", ""))])
def test_parse_s3_uri(uri, expected):
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize("uri", ["s3://", "http://b/p", "/local/path"])
def test_parse_s3_uri_refuses_non_uris(uri):
    with pytest.raises(StorageError):
        parse_s3_uri(uri)
