"""`s3encfs info`'s "formats" section: which object formats a bucket/prefix holds, with counts.

One LIST of the prefix (all keys), then a HEAD of each object of a random sample (``--sample N``,
default 1000) or of all of them (``--all-objects``); the report says which. Nothing is decrypted
and no key is needed: the format is told by the metadata names alone —

* ``client-v1`` / ``client-v2``: our client format (``s3encfs-v``, docs/FORMAT.md);
* ``s3ec-v1`` / ``s3ec-v2`` / ``s3ec-v3``: Amazon S3 Encryption Client objects
  (docs/ENCRYPTION.md), ``-cbc`` for legacy AES-CBC content (no integrity), with the wrapping
  algorithm counted separately; metadata kept in ``X.instruction`` is read (one small GET);
* ``s3ec-invalid``: S3EC names that do not form a complete set (`check` says more);
* ``plain``: none of these (possibly server-side encrypted: see ``sse``).

Server-side encryption is counted from the same HEADs (``none``, ``sse-s3``, ``sse-kms``,
``dsse-kms``, ``sse-c``); an SSE-C object cannot be HEADed without its key (400), so it counts
as ``sse-c`` with format ``unknown (sse-c)``. Directory markers, ``.instruction`` companions and
``.s3encfs/`` control objects (of a mount at any prefix) are counted by key, without a HEAD.
"""

from __future__ import annotations

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from s3encfs.crypto import s3ec_format as fmt
from s3encfs.crypto.envelope import META_VERSION

_SSE = {"AES256": "sse-s3", "aws:kms": "sse-kms", "aws:kms:dsse": "dsse-kms"}


def classify(meta: dict[str, str], instruction: bytes | None = None) -> tuple[str, str | None]:
    """(format, S3EC wrapping algorithm or None) from an object's user metadata."""
    low = fmt.lower_keys(meta)
    if META_VERSION in low:
        return f"client-v{low[META_VERSION]}", None
    s3 = {k: v for k, v in low.items() if k in fmt.ALL_NAMES}
    if not s3 and instruction is None:
        return "plain", None
    try:
        if instruction is not None and (fmt.needs_instruction_file(s3) or not fmt.is_s3ec(s3)):
            s3 = fmt.merge_instruction(s3, instruction)
        env = fmt.parse_envelope(s3)
    except fmt.NotS3EC:
        return "s3ec-invalid", None
    cbc = "-cbc" if not env.authenticated else ""
    return f"s3ec-v{env.version}{cbc}", env.wrap_alg or "legacy (inferred)"


def _one(client: Any, bucket: str, key: str, has_instruction: bool) -> tuple[str, str, str | None]:
    """(format, sse, wrap) of one object from its HEAD."""
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 400:  # SSE-C: HEAD needs the customer key
            return "unknown (sse-c)", "sse-c", None
        if status == 404:
            return "vanished", "none", None
        raise
    sse = "sse-c" if head.get("SSECustomerAlgorithm") else _SSE.get(
        str(head.get("ServerSideEncryption")), "none")
    meta = head.get("Metadata", {}) or {}
    instruction = None
    low = fmt.lower_keys(meta)
    if has_instruction and (fmt.needs_instruction_file(low) or not fmt.is_s3ec(low)):
        try:
            instruction = client.get_object(Bucket=bucket, Key=key + fmt.INSTRUCTION_SUFFIX
                                            )["Body"].read()
        except ClientError:
            instruction = None
    form, wrap = classify(meta, instruction)
    return form, sse, wrap


def survey(client: Any, bucket: str, prefix: str, *, sample: int | None = 1000,
           jobs: int = 8, rng: random.Random | None = None) -> dict[str, Any]:
    """The formats report; `sample` None = HEAD every object."""
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    present = set(keys)
    by_key: Counter[str] = Counter()
    objects: list[str] = []
    for k in keys:
        rel = k[len(prefix):]
        if "/.s3encfs/" in "/" + rel:  # a mount's control objects, at any mount prefix
            by_key["s3encfs control objects"] += 1
        elif k.endswith("/"):
            by_key["directory markers"] += 1
        elif k.endswith(fmt.INSTRUCTION_SUFFIX) and k[:-len(fmt.INSTRUCTION_SUFFIX)] in present:
            by_key["s3ec instruction files"] += 1
        else:
            objects.append(k)
    chosen = objects
    if sample is not None and sample < len(objects):
        chosen = sorted((rng or random.Random()).sample(objects, sample))
    forms: Counter[str] = Counter()
    sses: Counter[str] = Counter()
    wraps: Counter[str] = Counter()
    with ThreadPoolExecutor(jobs) as pool:
        for form, sse, wrap in pool.map(
                lambda k: _one(client, bucket, k, k + fmt.INSTRUCTION_SUFFIX in present), chosen):
            forms[form] += 1
            sses[sse] += 1
            if wrap:
                wraps[wrap] += 1
    return {"objects": len(objects), "headed": len(chosen),
            "scope": "all objects" if len(chosen) == len(objects) else
            f"random sample of {len(chosen)}",
            "formats": dict(sorted(forms.items())), "sse": dict(sorted(sses.items())),
            "s3ec_wrapping": dict(sorted(wraps.items())), "by_key": dict(sorted(by_key.items()))}


def render(rep: dict[str, Any]) -> list[str]:
    head = (f"  formats ({rep['scope']} of {rep['objects']} objects, by HEAD):"
            if rep["objects"] else "  formats:                 no objects")
    lines = [head]
    for name, n in rep["formats"].items():
        lines.append(f"    {name:<22} {n}")
    if rep["sse"]:
        lines.append("    server-side:           " + ", ".join(f"{k} {v}" for k, v in
                                                               rep["sse"].items()))
    if rep["s3ec_wrapping"]:
        lines.append("    s3ec key wrapping:     " + ", ".join(f"{k} {v}" for k, v in
                                                               rep["s3ec_wrapping"].items()))
    for name, n in rep["by_key"].items():
        lines.append(f"    {name + ':':<22} {n} (by key, no HEAD)")
    return lines
