"""ObjectStore and SSE policy against a real SeaweedFS (conftest fixtures) and moto_server."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import pytest
from botocore.exceptions import ClientError

from s3encfs.server import REGION, SeaweedS3
from s3encfs.store import (
    AccessDenied,
    BucketMissing,
    EndpointUnreachable,
    NotFound,
    ObjectStore,
    PreconditionFailed,
    SseMismatch,
    SseNotEnforced,
    StoreError,
    canary,
    parse_policy,
)
from s3encfs.store.probe import _prove_key_required
from s3encfs.store.sse import SsePolicy, key_md5

MiB = 1024 * 1024
K1 = ("k1", secrets.token_bytes(32))
K2 = ("k2", secrets.token_bytes(32))


class MkStore(Protocol):
    def __call__(self, policy: SsePolicy | None = None, **kw: Any) -> ObjectStore: ...


@pytest.fixture
def mkstore(s3server: SeaweedS3, bucket: str, monkeypatch: pytest.MonkeyPatch,
            s3_client: str) -> MkStore:
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)

    def make(policy: SsePolicy | None = None, **kw: Any) -> ObjectStore:
        kw.setdefault("endpoint_url", s3server.endpoint)
        kw.setdefault("s3_client", s3_client)
        return ObjectStore(kw.pop("bucket", bucket), region=REGION, sse=policy, **kw)

    return make


@pytest.fixture
def store(mkstore: MkStore) -> ObjectStore:
    return mkstore()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _md5s(raw: dict) -> set[str]:
    return {v.strip() for v in raw["SSECustomerKeyMD5"].split(",")}


def _keys(store: ObjectStore, prefix: str) -> list[str]:
    """Keys under prefix, minus the emptied implicit directory SeaweedFS lists as `prefix`."""
    return [o.key for p in store.list_pages(prefix, None) for o in p.objects if o.key != prefix]


# -- plain round trips -------------------------------------------------------------------------


def test_put_head_get_range(store: ObjectStore) -> None:
    body = secrets.token_bytes(10_000)
    etag = store.put("d/f.bin", body, {"Mode": "33188", "mtime": "1.5"}, content_type="x/y")
    assert etag and '"' not in etag
    info = store.head("d/f.bin")
    assert (info.key, info.size, info.etag) == ("d/f.bin", 10_000, etag)
    assert info.metadata == {"mode": "33188", "mtime": "1.5"}
    assert abs(info.last_modified - time.time()) < 3600
    data, ginfo = store.get("d/f.bin", if_match=etag)
    assert data == body and ginfo.etag == etag and ginfo.metadata == info.metadata
    assert store.get_range("d/f.bin", 100, 4196) == body[100:4196]
    assert store.get_range("d/f.bin", 9_990, 20_000) == body[9_990:]
    assert store.get_range("d/f.bin", 5, 5) == b""
    assert store.get_range("d/f.bin", 20_000, 20_010) == b""
    s = store.stats.as_dict()
    assert s["requests"]["PutObject"] == 1 and s["bytes_up"] == 10_000
    assert s["bytes_down"] == 10_000 + 4096 + 10
    assert s["errors"] == 1  # the 416 of the read past EOF


def test_big_ranges(store: ObjectStore) -> None:
    """Ranges of 4 MiB and more (split into parallel part GETs under crt): exact bytes, a
    range past the end is cut at EOF or empty, and If-Match still holds for every part."""
    body = secrets.token_bytes(9 * MiB + 123)
    etag = store.put("big/f", body, {})
    assert store.get_range("big/f", 0, len(body), if_match=etag) == body
    assert store.get_range("big/f", 3 * MiB + 1, 8 * MiB + 7) == body[3 * MiB + 1 : 8 * MiB + 7]
    assert store.get_range("big/f", 4 * MiB, 20 * MiB) == body[4 * MiB :]
    assert store.get_range("big/f", 10 * MiB, 20 * MiB) == b""
    with pytest.raises(PreconditionFailed):
        store.get_range("big/f", 0, 8 * MiB, if_match="0" * 32)


def test_non_ascii_metadata_is_refused(store: ObjectStore) -> None:
    """botocore refuses non-ASCII user metadata before sending; the CRT path must too (the
    server would store it, and the clients would then disagree on what was written)."""
    with pytest.raises(StoreError, match="ascii"):
        store.put("na", b"x", {"x": "\u00e9"})
    with pytest.raises(NotFound):
        store.head("na")


def test_list_pages(store: ObjectStore) -> None:
    for k in ["a/1", "a/2", "a/sub/x", "a/sub/y", "b"]:
        store.put(k, k.encode(), {})
    pages = list(store.list_pages("a/"))
    objs = [o for p in pages for o in p.objects]
    assert [o.key for o in objs] == ["a/1", "a/2"]
    assert all(o.metadata is None and o.size == 3 and '"' not in o.etag for o in objs)
    assert [p for pg in pages for p in pg.prefixes] == ["a/sub/"]
    flat = [o.key for p in store.list_pages("a/", delimiter=None) for o in p.objects]
    assert flat == ["a/1", "a/2", "a/sub/x", "a/sub/y"]
    assert [o for p in store.list_pages("zzz/") for o in p.objects] == []


def test_list_pages_on_the_crt_match_boto3(mkstore: MkStore, monkeypatch: pytest.MonkeyPatch,
                                           s3_client: str) -> None:
    """The CRT client answers LIST itself (not botocore's paginator, ~3x its CPU), with
    the same keys, sizes, ETags and times as boto3, page after page."""
    keys = ["l/a b", "l/a+b", "l/100%", "l/é ü", "l/&<>\"'", "l/x?y=z#", "l/s d/f",
            "l/~t", "l/a%2Fb", "l/日本/語"]
    ref = mkstore(s3_client="boto3")
    for k in keys:
        ref.put(k, b"x", {})
    store = mkstore()
    if s3_client == "crt":  # botocore never sees a LIST of this store
        monkeypatch.setattr(store.client._fallback, "list_objects_v2", None)
        monkeypatch.setattr(store.client._fallback, "get_paginator", None)
    real = store.client.list_objects_v2
    monkeypatch.setattr(store.client, "list_objects_v2", lambda **kw: real(MaxKeys=3, **kw))

    def listing(st: ObjectStore, prefix: str, delimiter: str | None) -> tuple[Any, Any, int]:
        pages = list(st.list_pages(prefix, delimiter))
        return ([(o.key, o.size, o.etag, int(o.last_modified)) for p in pages for o in p.objects],
                [x for p in pages for x in p.prefixes], len(pages))

    for prefix, delimiter in (("l/", "/"), ("l/", None), ("l/s d/", "/"), ("l/日本/", None)):
        objs, prefixes, pages = listing(store, prefix, delimiter)
        assert (objs, prefixes) == listing(ref, prefix, delimiter)[:2]
        assert pages > 1 or prefix != "l/"  # MaxKeys=3: several pages, followed by token
    assert sorted(o[0] for o in listing(store, "l/", None)[0]) == sorted(keys)


def test_a_truncated_list_page_without_a_next_token_is_an_error(
        mkstore: MkStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page that says more follow but names no token is refused, never taken as the end of a
    whole listing (a short listing would look like deleted files)."""
    store = mkstore()
    for k in ("t/a", "t/b", "t/c"):
        store.put(k, b"x", {})
    real = store.client.list_objects_v2

    def truncated(**kw: Any) -> dict[str, Any]:
        page = real(MaxKeys=1, **kw)
        page.pop("NextContinuationToken", None)
        return page

    monkeypatch.setattr(store.client, "list_objects_v2", truncated)
    with pytest.raises(StoreError):
        list(store.list_pages("t/", None))


def test_copy_metadata_and_conditions(store: ObjectStore) -> None:
    etag = store.put("src", b"payload", {"mode": "1"})
    store.copy("src", "dst")
    assert store.head("dst").metadata == {"mode": "1"}
    store.copy("src", "dst2", metadata={"mode": "2"})
    assert store.head("dst2").metadata == {"mode": "2"}
    store.copy("src", "src", metadata={"mode": "3", "uid": "0"})  # in-place metadata update
    assert store.head("src").metadata == {"mode": "3", "uid": "0"}
    assert store.get("src")[0] == b"payload"
    store.put("src", b"changed", {})
    with pytest.raises(PreconditionFailed):
        store.copy("src", "dst3", if_match=etag)
    with pytest.raises(NotFound):
        store.copy("missing", "dst4")


def test_conditional_put_and_get(store: ObjectStore) -> None:
    etag = store.put("c", b"one", {}, if_none_match=True)
    with pytest.raises(PreconditionFailed) as ei:
        store.put("c", b"two", {}, if_none_match=True)
    assert ei.value.status == 412 and ei.value.key == "c" and "s3://" in str(ei.value)
    etag2 = store.put("c", b"three", {}, if_match=etag)
    with pytest.raises(PreconditionFailed):
        store.put("c", b"four", {}, if_match=etag)
    with pytest.raises(PreconditionFailed):
        store.get_range("c", 0, 2, if_match=etag)
    assert store.get_range("c", 0, 2, if_match=etag2) == b"th"


def test_delete_and_delete_many(store: ObjectStore) -> None:
    keys = [f"m/{i}" for i in range(5)]
    for k in keys:
        store.put(k, b"x", {})
    store.delete("m/0")
    store.delete("m/0")  # missing is fine
    store.delete_many([*keys[1:], "m/never"])
    store.delete_many([])
    # SeaweedFS may list the emptied implicit directory itself as "m/" (size 0, no ETag).
    assert [o.key for p in store.list_pages("m/") for o in p.objects if o.key != "m/"] == []
    with pytest.raises(NotFound):
        store.head("m/3")


def test_multipart_with_middle_part_copy(store: ObjectStore) -> None:
    src = secrets.token_bytes(12 * MiB)
    src_etag = store.put("big", src, {})
    uid = store.create_multipart("out", {"mode": "420"})
    assert ("out", uid) in [(k, u) for k, u, _ in store.list_multipart_uploads("o")]
    new1 = secrets.token_bytes(5 * MiB)
    p1 = store.upload_part("out", uid, 1, new1)
    p2 = store.upload_part_copy("out", uid, 2, "big", 3 * MiB, 9 * MiB, src_etag=src_etag)
    p3 = store.upload_part("out", uid, 3, b"tail")
    etag = store.complete_multipart("out", uid, [(1, p1), (2, p2), (3, p3)], if_none_match=True)
    assert etag.endswith("-3") and '"' not in etag
    data, info = store.get("out")
    assert data == new1 + src[3 * MiB : 9 * MiB] + b"tail"
    assert info.metadata == {"mode": "420"}
    assert store.list_multipart_uploads("o") == []
    assert store.stats.as_dict()["requests"]["UploadPartCopy"] == 1


def test_multipart_conditions_and_abort(store: ObjectStore) -> None:
    store.put("exists", b"x", {})
    uid = store.create_multipart("exists", {})
    p1 = store.upload_part("exists", uid, 1, b"y")
    with pytest.raises(PreconditionFailed):
        store.complete_multipart("exists", uid, [(1, p1)], if_none_match=True)
    store.abort_multipart("exists", uid)
    store.abort_multipart("exists", uid)  # already gone is fine
    assert store.list_multipart_uploads("") == []
    uid2 = store.create_multipart("other", {})
    with pytest.raises(PreconditionFailed):
        store.upload_part_copy("other", uid2, 1, "exists", 0, 1, src_etag="0" * 32)
    store.abort_multipart("other", uid2)


def test_threads_share_one_client(store: ObjectStore) -> None:
    def work(i: int) -> bytes:
        store.put(f"t/{i}", str(i).encode() * 100, {})
        return store.get(f"t/{i}")[0]

    with ThreadPoolExecutor(16) as pool:
        out = list(pool.map(work, range(64)))
    assert out == [str(i).encode() * 100 for i in range(64)]
    s = store.stats.as_dict()
    assert s["requests"]["PutObject"] == 64 and s["requests"]["GetObject"] == 64


# -- error mapping -----------------------------------------------------------------------------


def test_errors_missing_key_and_bucket(store: ObjectStore, mkstore: MkStore) -> None:
    store.check_bucket()
    with pytest.raises(NotFound) as ei:
        store.head("nope/x")
    assert ei.value.status == 404 and "nope/x" in str(ei.value)
    with pytest.raises(NotFound) as ei2:
        store.get("nope/y")
    assert "NoSuchKey" in str(ei2.value) and f"s3://{store.bucket}/nope/y" in str(ei2.value)
    gone = mkstore(bucket="no-such-bucket-s3encfs")
    with pytest.raises(BucketMissing) as eb:
        gone.check_bucket()
    assert "no-such-bucket-s3encfs" in str(eb.value)
    with pytest.raises(BucketMissing):  # (SeaweedFS auto-creates buckets on PUT, so read)
        list(gone.list_pages(""))


def test_wrong_credentials_access_denied(mkstore: MkStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    bad = mkstore()
    with pytest.raises(AccessDenied) as ei:
        bad.check_bucket()
    assert "credentials" in str(ei.value)
    with pytest.raises(AccessDenied):
        bad.put("k", b"x", {})


def test_closed_port_unreachable_quickly(mkstore: MkStore) -> None:
    dead = mkstore(endpoint_url=f"http://127.0.0.1:{_free_port()}", connect_timeout=1)
    t = time.monotonic()
    with pytest.raises(EndpointUnreachable) as ei:
        dead.check_bucket()
    assert time.monotonic() - t < 5
    assert "unreachable" in str(ei.value)
    fast = mkstore(endpoint_url=f"http://127.0.0.1:{_free_port()}", max_attempts=1)
    with pytest.raises(EndpointUnreachable):
        fast.head("k")


# -- SSE on SeaweedFS --------------------------------------------------------------------------


def test_ssec_roundtrip_multipart_copy(mkstore: MkStore, s3: Any, bucket: str) -> None:
    st = mkstore(parse_policy("sse-c", ssec_keys=[K1]))
    body = secrets.token_bytes(7 * MiB)
    st.put("e/src", body, {"mode": "1"})
    raw = s3.head_object(
        Bucket=bucket, Key="e/src", SSECustomerAlgorithm="AES256", SSECustomerKey=K1[1]
    )
    assert raw["SSECustomerAlgorithm"] == "AES256"
    assert _md5s(raw) == {key_md5(K1[1])}  # SeaweedFS may repeat it: "X, X"
    assert raw["Metadata"]["s3encfs-ssec"] == "k1"
    for call in (s3.get_object, s3.head_object):
        with pytest.raises(ClientError) as ei:
            call(Bucket=bucket, Key="e/src")
        assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert st.get("e/src")[0] == body
    assert st.get_range("e/src", 10, 20) == body[10:20]
    # multipart: new part + a ranged part copy of an SSE-C source (SeaweedFS: 501 -> fallback)
    uid = st.create_multipart("e/mp", {})
    p1 = st.upload_part("e/mp", uid, 1, body[: 5 * MiB])
    p2 = st.upload_part_copy("e/mp", uid, 2, "e/src", MiB, 6 * MiB)
    p3 = st.upload_part_copy("e/mp", uid, 3, "e/src", 0, 10)  # 501 remembered: no 2nd attempt
    etag = st.complete_multipart("e/mp", uid, [(1, p1), (2, p2), (3, p3)])
    assert etag.endswith("-3")
    assert st.get("e/mp")[0] == body[: 5 * MiB] + body[MiB : 6 * MiB] + body[:10]
    assert st.stats.as_dict()["requests"]["UploadPartCopy"] == 1
    st.copy("e/src", "e/cp")
    assert st.get("e/cp")[0] == body and st.head("e/cp").metadata == {
        "mode": "1",
        "s3encfs-ssec": "k1",
    }
    with pytest.raises(ClientError):
        s3.get_object(Bucket=bucket, Key="e/cp")


def test_ssec_key_rotation(mkstore: MkStore, s3: Any, bucket: str) -> None:
    old = mkstore(parse_policy("sse-c", ssec_keys=[K1]))
    old.put("r", b"secret", {"mode": "1"})
    new = mkstore(parse_policy("sse-c", ssec_keys=[K2, K1]))  # fresh LRU: must try keys
    info = new.head("r")
    assert info.metadata == {"mode": "1", "s3encfs-ssec": "k1"}
    assert new.get("r")[0] == b"secret"
    new.copy("r", "r")  # re-encrypt in place with the newest key
    assert (new.head("r").metadata or {}).get("s3encfs-ssec") == "k2"
    raw = s3.head_object(
        Bucket=bucket, Key="r", SSECustomerAlgorithm="AES256", SSECustomerKey=K2[1]
    )
    assert _md5s(raw) == {key_md5(K2[1])}
    fresh = mkstore(parse_policy("sse-c", ssec_keys=[K2, K1]))
    assert fresh.get_range("r", 0, 3) == b"sec"
    only_k1 = mkstore(parse_policy("sse-c", ssec_keys=[K1]))
    with pytest.raises(AccessDenied):
        only_k1.get("r")


@pytest.mark.parametrize(
    ("spec", "bk", "want"),
    [
        ("sse-s3", False, {"ServerSideEncryption": "AES256"}),
        (
            "sse-kms:alias/s3encfs-test",
            True,
            {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/s3encfs-test"},
        ),
    ],
)
def test_sse_s3_and_kms_headers(
    mkstore: MkStore, s3: Any, bucket: str, spec: str, bk: bool, want: dict[str, str]
) -> None:
    st = mkstore(parse_policy(spec, bucket_key=bk))
    st.put("k/put", b"x" * 100, {})
    uid = st.create_multipart("k/mp", {})
    p1 = st.upload_part("k/mp", uid, 1, b"y" * 100)
    st.complete_multipart("k/mp", uid, [(1, p1)])
    st.copy("k/put", "k/cp")
    for key in ("k/put", "k/mp", "k/cp"):
        raw = s3.head_object(Bucket=bucket, Key=key)
        assert {k: raw.get(k) for k in want} == want, key
    canary(st, "k/")
    assert [o.key for p in st.list_pages("k/") for o in p.objects] == ["k/cp", "k/mp", "k/put"]


def test_dsse_ignored_by_seaweedfs_is_caught(mkstore: MkStore, s3: Any, bucket: str) -> None:
    st = mkstore(parse_policy("dsse-kms:alias/s3encfs-test"))
    with pytest.raises(SseMismatch) as ei:
        st.put("d", b"x", {})
    assert "aws:kms:dsse" in str(ei.value) and f"s3://{bucket}/d" in str(ei.value)
    with pytest.raises(SseNotEnforced):
        canary(st, "p/")
    assert _keys(st, "p/") == []  # canary cleaned up


def test_canary_ssec_passes_on_seaweedfs(mkstore: MkStore) -> None:
    st = mkstore(parse_policy("sse-c", ssec_keys=[K2, K1]))
    canary(st, "pre/")
    assert _keys(st, "pre/") == []
    canary(mkstore(), "")  # mode none: a write/read/delete probe


@pytest.fixture
def moto_endpoint(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    log = open(tmp_path / "moto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "moto_server"),
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_canary_refuses_moto_ssec(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch,
                                  s3_client: str) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    st = ObjectStore(
        f"canary-{s3_client}",
        endpoint_url=moto_endpoint,
        region=REGION,
        sse=parse_policy("sse-c", ssec_keys=[K1]),
        s3_client=s3_client,
    )
    st.client.create_bucket(Bucket=st.bucket)
    with pytest.raises(SseNotEnforced) as ei:
        canary(st, "m/")
    assert "refusing to mount" in str(ei.value) and "sse-c" in str(ei.value)
    # moto already fails the response check; the key-less read probe must refuse it too.
    st.client.put_object(Bucket=st.bucket, Key="raw", Body=b"x", **st.sse.write_args())
    with pytest.raises(SseNotEnforced) as ei2:
        _prove_key_required(st, "raw")
    assert "without the customer key succeeded" in str(ei2.value)
    assert K1[1].hex() not in str(ei.value)


@pytest.mark.parametrize("value", [
    "2026-11-27T03:44:01.123Z", "2026-11-27T03:44:01Z", "1999-12-31T23:59:59.999999Z",
    "Wed, 01 Jan 2025 00:00:00 GMT", "2026-11-27T03:44:01+02:00", "1700000000",
])
def test_fast_timestamp_parser_agrees_with_botocore(value):
    from botocore.parsers import DEFAULT_TIMESTAMP_PARSER

    from s3encfs.store.s3 import parse_timestamp
    assert parse_timestamp(value).timestamp() == DEFAULT_TIMESTAMP_PARSER(value).timestamp()


def test_listing_times_match_head_with_the_fast_parser(s3, bucket, mkstore):
    s3.put_object(Bucket=bucket, Key="t/x", Body=b"1")
    head = s3.head_object(Bucket=bucket, Key="t/x")["LastModified"].timestamp()
    store = mkstore()
    [page] = list(store.list_pages("t/", "/"))
    assert [o.key for o in page.objects] == ["t/x"]
    assert abs(page.objects[0].last_modified - head) < 1.0
