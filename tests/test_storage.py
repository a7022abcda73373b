"""Object storage against a real S3 server (moto) on 127.0.0.1 through the real minio client."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from pathlib import Path

import pytest

from helpers import PLANTED_ACCESS_KEY, PLANTED_SECRET_KEY
from leukemia_mtl.config import StorageConfig
from leukemia_mtl.data.storage import ObjectStore, StorageSettings, parse_s3_uri, safe_local_path
from leukemia_mtl.errors import StorageError

FAST = StorageConfig(
    attempts=3, backoff_seconds=0.05, backoff_max_seconds=0.2, connect_timeout_seconds=1, read_timeout_seconds=5
)


@pytest.fixture
def store(s3_env):
    store = ObjectStore(StorageSettings.from_env(), FAST)
    store.ensure_bucket("cells")
    return store


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


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
    store = ObjectStore(
        StorageSettings.from_env(), dataclasses.replace(FAST, etag_verify_max_bytes=etag_verify_max_bytes)
    )
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
        "s3",
        endpoint_url=s3_env["MINIO_ENDPOINT"],
        region_name="us-east-1",
        aws_access_key_id=PLANTED_ACCESS_KEY,
        aws_secret_access_key=PLANTED_SECRET_KEY,
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


def test_server_going_away_mid_run_gives_a_clear_error_and_no_partial_files(
    s3_server, store, synthetic_root, tmp_path, caplog
):
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


def test_missing_bucket_and_empty_prefix_are_clear(s3_env, store, tmp_path):
    with pytest.raises(StorageError, match="NoSuchBucket .*buckets NAME"):
        store.download_prefix("s3://no-such-bucket/x", tmp_path)
    with pytest.raises(StorageError, match="nothing found under s3://cells/empty"):
        store.download_prefix("s3://cells/empty", tmp_path)


# -- a server killed part-way through a transfer (the proxy drops the connection) ---------------


@pytest.fixture
def proxy(s3_server):
    from faults import CuttingProxy

    proxy = CuttingProxy(s3_server.endpoint)
    yield proxy
    proxy.close()


@pytest.fixture
def proxied_store(store, proxy, s3_env):
    """(through the proxy, straight to the server): faults hit the first, the second checks."""
    settings = dataclasses.replace(store.settings, endpoint=proxy.endpoint.split("//")[1])
    return ObjectStore(settings, FAST), store


def _payload(tmp_path: Path, kib: int = 256) -> Path:
    path = tmp_path / "payload.bin"
    path.write_bytes(hashlib.sha256(b"payload").digest() * (kib * 32))
    return path


@pytest.mark.parametrize("size_kib", [256, 2048])  # verified by the PUT's ETag, and by a HEAD
def test_an_upload_cut_once_is_retried_and_the_object_is_whole(proxied_store, proxy, tmp_path, caplog, size_kib):
    through, direct = proxied_store
    payload = _payload(tmp_path, size_kib)
    proxy.cut("up", after_bytes=64 * 1024)
    with caplog.at_level(logging.WARNING):
        through.upload_file(payload, "cells", "up/payload.bin")
    assert proxy.cuts == 1 and "retry 1/2" in caplog.text
    direct.download_file("cells", "up/payload.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == payload.read_bytes()


@pytest.mark.parametrize("size_kib", [256, 6144])  # one PUT, and a multipart upload
def test_an_upload_cut_every_time_fails_clearly_and_leaves_no_object(proxied_store, proxy, tmp_path, size_kib):
    through, direct = proxied_store
    proxy.cut("up", after_bytes=(64 if size_kib < 5120 else 5200) * 1024, times=None)
    with pytest.raises(
        StorageError, match=r"upload .*payload.bin to s3://cells/up/payload.bin .*failed after 3 attempts"
    ):
        through.upload_file(_payload(tmp_path, size_kib), "cells", "up/payload.bin")
    assert proxy.cuts == 3  # bounded: FAST allows 3 attempts
    assert direct.list_keys("cells", "up") == []  # nothing visible under the final key, not even part of it


def test_a_download_cut_once_is_retried_and_the_file_is_whole(proxied_store, proxy, tmp_path):
    through, direct = proxied_store
    payload = _payload(tmp_path)
    direct.upload_file(payload, "cells", "down/payload.bin")
    proxy.cut("down", after_bytes=64 * 1024)
    through.download_file("cells", "down/payload.bin", tmp_path / "out" / "payload.bin")
    assert proxy.cuts == 1
    assert (tmp_path / "out" / "payload.bin").read_bytes() == payload.read_bytes()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["payload.bin"]


def test_a_download_cut_every_time_fails_clearly_and_leaves_no_file(proxied_store, proxy, tmp_path):
    through, direct = proxied_store
    direct.upload_file(_payload(tmp_path), "cells", "down/payload.bin")
    proxy.cut("down", after_bytes=64 * 1024, times=None)
    with pytest.raises(StorageError, match="download s3://cells/down/payload.bin .*failed after 3 attempts"):
        through.download_file("cells", "down/payload.bin", tmp_path / "out" / "payload.bin")
    assert list((tmp_path / "out").iterdir()) == []  # neither the final name nor a .part file


# -- credentials and permissions, with the server checking signatures and IAM policies ---------


@pytest.fixture
def checking_server(s3_server, monkeypatch):
    """The S3 server with authentication on: a read-only user of bucket `cells`, and its keys."""
    import json

    import boto3
    from moto import settings as moto_settings

    admin = dict(
        endpoint_url=s3_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=PLANTED_ACCESS_KEY,
        aws_secret_access_key=PLANTED_SECRET_KEY,
    )
    boto3.client("s3", **admin).create_bucket(Bucket="cells")
    boto3.client("s3", **admin).put_object(Bucket="cells", Key="ro/a.txt", Body=b"readable")
    iam = boto3.client("iam", **admin)
    iam.create_user(UserName="reader")
    read_only = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"],
                "Resource": ["arn:aws:s3:::cells", "arn:aws:s3:::cells/*"],
            }
        ],
    }
    iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps(read_only))
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # from here on, every request is checked
    return {
        "MINIO_ENDPOINT": s3_server.endpoint,
        "MINIO_ACCESS_KEY": key["AccessKeyId"],
        "MINIO_SECRET_KEY": key["SecretAccessKey"],
    }


def test_a_read_only_bucket_refuses_the_upload_once_and_clearly(checking_server, tmp_path, caplog):
    store = ObjectStore(StorageSettings.from_env(checking_server), FAST)
    store.download_file("cells", "ro/a.txt", tmp_path / "a.txt")  # reading is allowed
    assert (tmp_path / "a.txt").read_bytes() == b"readable"
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(StorageError, match=r"AccessDenied .*read-only bucket") as info,
    ):
        store.upload_file(_payload(tmp_path), "cells", "ro/new.bin")
    assert "retry" not in caplog.text  # a refusal is not retried
    assert "s3://cells/ro/new.bin" in str(info.value)
    assert [k for k, _ in store.list_keys("cells", "ro")] == ["ro/a.txt"]
    assert checking_server["MINIO_SECRET_KEY"] not in str(info.value) + caplog.text


@pytest.mark.parametrize(
    "change, code, variable",
    [
        ({"MINIO_SECRET_KEY": "not-the-secret"}, "SignatureDoesNotMatch", "MINIO_SECRET_KEY"),
        ({"MINIO_ACCESS_KEY": "AKIANOSUCHKEY0000000"}, "InvalidAccessKeyId", "MINIO_ACCESS_KEY"),
    ],
)
def test_wrong_credentials_fail_at_once_naming_the_variable_not_its_value(
    checking_server, tmp_path, caplog, change, code, variable
):
    env = {**checking_server, **change}
    store = ObjectStore(StorageSettings.from_env(env), FAST)
    with caplog.at_level(logging.WARNING), pytest.raises(StorageError, match=f"{code} .*check {variable}") as info:
        store.download_prefix("s3://cells/ro", tmp_path / "mirror")
    assert "retry" not in caplog.text
    assert not (tmp_path / "mirror").exists() or not any((tmp_path / "mirror").iterdir())
    for value in env.values():
        if value != env["MINIO_ENDPOINT"]:
            assert value not in str(info.value) + caplog.text


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
    for name in (
        "MINIO_ENDPOINT",
        "MINIO_ACCESS_KEY",
        "MINIO_SECRET_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL",
    ):
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


@pytest.mark.parametrize("uri, expected", [("s3://bkt/p/q/", ("bkt", "p/q")), ("s3://bkt", ("bkt", ""))])
def test_parse_s3_uri(uri, expected):
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize("uri", ["s3://", "http://b/p", "/local/path"])
def test_parse_s3_uri_refuses_non_uris(uri):
    with pytest.raises(StorageError):
        parse_s3_uri(uri)


@pytest.mark.parametrize(
    "endpoint, words",
    [
        ("http://user:hunter2@minio:9000", "MINIO_ENDPOINT carries credentials"),
        ("http://[::1:9000", "MINIO_ENDPOINT is not a valid endpoint"),
        ("http://minio:9000/minio", "MINIO_ENDPOINT has a path (/minio)"),
        ("ftp://minio:21", "MINIO_ENDPOINT has scheme 'ftp'"),
        ("minio:notaport", "MINIO_ENDPOINT is not a valid endpoint"),
    ],
)
def test_an_endpoint_the_client_would_misread_is_one_line_without_its_secrets(
    endpoint, words, tmp_path, monkeypatch, capsys
):
    from leukemia_mtl.cli import main

    env = {"MINIO_ENDPOINT": endpoint, "MINIO_ACCESS_KEY": "a", "MINIO_SECRET_KEY": "b"}
    with pytest.raises(StorageError, match=re.escape(words)):
        StorageSettings.from_env(env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["buckets", "cells"]) == 1
    err = capsys.readouterr().err
    assert words in err and "hunter2" not in err and "Traceback" not in err
    assert StorageSettings.from_env({**env, "MINIO_ENDPOINT": "http://[::1]:9000"}).endpoint == "[::1]:9000"


@pytest.mark.parametrize("name", ["Bad_Name", "ab", "cells-", "cells..raw", "x" * 64])
def test_a_bucket_name_s3_would_refuse_is_one_line(name, monkeypatch, capsys):
    from leukemia_mtl.cli import main

    for variable, value in {"MINIO_ENDPOINT": "127.0.0.1:1", "MINIO_ACCESS_KEY": "a", "MINIO_SECRET_KEY": "b"}.items():
        monkeypatch.setenv(variable, value)
    assert main(["buckets", name]) == 1
    err = capsys.readouterr().err
    assert f"bucket name {name!r} is not valid" in err and "Traceback" not in err
    with pytest.raises(StorageError, match="is not valid"):
        parse_s3_uri(f"s3://{name}/prefix")


def test_keys_that_cannot_be_mirrored_to_files_are_refused_before_any_write(store, s3_env, tmp_path):
    import boto3

    raw = boto3.client(
        "s3",
        endpoint_url=s3_env["MINIO_ENDPOINT"],
        region_name="us-east-1",
        aws_access_key_id=PLANTED_ACCESS_KEY,
        aws_secret_access_key=PLANTED_SECRET_KEY,
    )
    raw.put_object(Bucket="cells", Key="clash/L1", Body=b"a file")
    raw.put_object(Bucket="cells", Key="clash/L1/a.png", Body=b"in a folder of the same name")
    with pytest.raises(
        StorageError, match="object keys 'clash/L1' and 'clash/L1/a.png' need 'L1' to be a file and a folder"
    ):
        store.download_prefix("s3://cells/clash", tmp_path / "target")
    raw.put_object(Bucket="cells", Key="long/" + "n" * 300 + ".png", Body=b"long")
    with pytest.raises(StorageError, match="is 304 bytes, over a file system's 255"):
        store.download_prefix("s3://cells/long", tmp_path / "target")
    assert not list((tmp_path / "target").rglob("*"))


def test_the_data_version_of_a_prefix_holding_a_dotdot_key_is_one_line(store, s3_env, tmp_path):
    import boto3

    from leukemia_mtl.config import get_profile
    from leukemia_mtl.data.ingest import fingerprint

    raw = boto3.client(
        "s3",
        endpoint_url=s3_env["MINIO_ENDPOINT"],
        region_name="us-east-1",
        aws_access_key_id=PLANTED_ACCESS_KEY,
        aws_secret_access_key=PLANTED_SECRET_KEY,
    )
    raw.put_object(Bucket="cells", Key="dots/ok.png", Body=b"ok")
    before = fingerprint("s3://cells/dots", "none", get_profile("demo"))
    raw.put_object(Bucket="cells", Key="dots/../../escape.png", Body=b"evil")
    with pytest.raises(StorageError, match="would write outside"):
        fingerprint("s3://cells/dots", "none", get_profile("demo"))
    assert before.startswith("smears=s3-")
