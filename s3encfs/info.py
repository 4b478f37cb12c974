"""`s3encfs info s3://BUCKET`: what the bucket does to this mount's objects.

Shows the bucket's default encryption (algorithm, KMS key, Bucket Key, blocked encryption types),
its replication configuration, and — by S3's rules — how replicas of this mount's objects will be
encrypted, with warnings where the mount's mode and the bucket's settings disagree.

S3's replication rules used here (AWS documentation, "Replicating encrypted objects"):
- an object stored without SSE is encrypted on the replica with the *destination* bucket's default
  encryption;
- SSE-S3 objects are replicated as SSE-S3;
- SSE-KMS and DSSE-KMS objects are replicated only when the rule opts in
  (SourceSelectionCriteria.SseKmsEncryptedObjects) and the replica uses the same type with the
  rule's ReplicaKmsKeyID;
- SSE-C objects are replicated as SSE-C with the same customer key (S3 never sees it afterwards).
Client-side encrypted bodies are ciphertext to S3: they replicate as they are.
"""

from __future__ import annotations

import json
from typing import Any

import click
from botocore.exceptions import BotoCoreError, ClientError

from s3encfs.cli_options import bucket_options

_NOT_CONFIGURED = {
    "ServerSideEncryptionConfigurationNotFoundError",
    "ReplicationConfigurationNotFoundError",
    "NoSuchReplicationConfiguration",
}
_UNSUPPORTED = {"NotImplemented", "MethodNotAllowed", "NotSupported", "XNotImplemented"}

ALG_NAMES = {"AES256": "sse-s3", "aws:kms": "sse-kms", "aws:kms:dsse": "dsse-kms"}


def _err(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, ClientError):
        e = exc.response.get("Error", {})
        return str(e.get("Code", "")), str(e.get("Message", ""))
    return type(exc).__name__, str(exc)


def bucket_encryption(client: Any, bucket: str) -> dict[str, Any]:
    """{"status": "configured"|"none"|"unsupported"|"error", ...rule fields}."""
    try:
        resp = client.get_bucket_encryption(Bucket=bucket)
    except (ClientError, BotoCoreError) as exc:
        code, msg = _err(exc)
        if code in _NOT_CONFIGURED:
            return {"status": "none"}
        if code in _UNSUPPORTED or (isinstance(exc, ClientError) and exc.response.get(
                "ResponseMetadata", {}).get("HTTPStatusCode") == 501):
            return {"status": "unsupported", "error": f"{code}: {msg}".strip(": ")}
        return {"status": "error", "error": f"{code}: {msg}".strip(": ")}
    rules = resp.get("ServerSideEncryptionConfiguration", {}).get("Rules", []) or []
    rule = rules[0] if rules else {}
    default = rule.get("ApplyServerSideEncryptionByDefault", {}) or {}
    blocked = rule.get("BlockedEncryptionTypes", {}) or {}
    return {
        "status": "configured" if default else "none",
        "algorithm": default.get("SSEAlgorithm"),
        "mode": ALG_NAMES.get(str(default.get("SSEAlgorithm")), default.get("SSEAlgorithm")),
        "kms_key_id": default.get("KMSMasterKeyID"),
        "bucket_key_enabled": bool(rule.get("BucketKeyEnabled", False)),
        "blocked_encryption_types": list(blocked.get("EncryptionType", []) or []),
    }


def bucket_replication(client: Any, bucket: str) -> dict[str, Any]:
    try:
        resp = client.get_bucket_replication(Bucket=bucket)
    except (ClientError, BotoCoreError) as exc:
        code, msg = _err(exc)
        if code in _NOT_CONFIGURED:
            return {"status": "none", "rules": []}
        if code in _UNSUPPORTED:
            return {"status": "unsupported", "rules": [], "error": f"{code}: {msg}"}
        return {"status": "error", "rules": [], "error": f"{code}: {msg}".strip(": ")}
    cfg = resp.get("ReplicationConfiguration", {}) or {}
    rules = []
    for r in cfg.get("Rules", []) or []:
        dest = r.get("Destination", {}) or {}
        flt = r.get("Filter", {}) or {}
        prefix = r.get("Prefix", flt.get("Prefix", (flt.get("And") or {}).get("Prefix", "")))
        ssc = r.get("SourceSelectionCriteria", {}) or {}
        rules.append({
            "id": r.get("ID", ""),
            "status": r.get("Status", ""),
            "prefix": prefix or "",
            "destination_bucket": str(dest.get("Bucket", "")).removeprefix("arn:aws:s3:::"),
            "replica_kms_key_id": (dest.get("EncryptionConfiguration") or {}).get(
                "ReplicaKmsKeyID"),
            "sse_kms_objects": (ssc.get("SseKmsEncryptedObjects") or {}).get("Status")
            == "Enabled",
        })
    return {"status": "configured", "role": cfg.get("Role"), "rules": rules}


def object_mode(encryption: str) -> tuple[bool, str]:
    """(client-side layer?, SSE mode of the objects: none|sse-s3|sse-kms|dsse-kms|sse-c)."""
    from s3encfs.config import parse_encryption

    client, sse, _key = parse_encryption(encryption)
    return client, sse or "none"


def replica_encryption(sse: str, kms_key: str | None, rule: dict[str, Any],
                       dest_default: dict[str, Any] | None) -> tuple[str, str | None]:
    """(how a replica of an object with SSE `sse` is encrypted, warning or None)."""
    if sse == "none":
        if dest_default is None or dest_default.get("status") in ("unsupported", "error", None):
            return ("destination bucket's default encryption (SSE-S3 on AWS unless the "
                    "destination sets another; could not read it)", None)
        if dest_default.get("status") == "configured":
            kid = f" with {dest_default['kms_key_id']}" if dest_default.get("kms_key_id") else ""
            return f"{dest_default['mode']}{kid} (destination bucket default)", None
        return ("destination bucket's default (none configured: SSE-S3 on AWS, unencrypted on "
                "servers without a default)", None)
    if sse == "sse-s3":
        return "sse-s3 (same type as the source)", None
    if sse in ("sse-kms", "dsse-kms"):
        if not rule.get("sse_kms_objects"):
            return ("NOT replicated", f"rule {rule.get('id') or '?'!r} does not opt in to "
                    "KMS-encrypted objects (SourceSelectionCriteria.SseKmsEncryptedObjects): "
                    f"{sse} objects of this mount will not be replicated")
        key = rule.get("replica_kms_key_id")
        if not key:
            return (f"{sse} (no ReplicaKmsKeyID)", f"rule {rule.get('id') or '?'!r} replicates "
                    "KMS objects but names no ReplicaKmsKeyID for the destination")
        return f"{sse} with {key} (rule's ReplicaKmsKeyID)", None
    if sse == "sse-c":
        return "sse-c with the same customer key (reading a replica needs the key)", None
    return sse, None


def build_report(client: Any, bucket: str, prefix: str, encryption: str, bucket_key: bool,
                 kms_key: str | None = None) -> dict[str, Any]:
    client_side, sse = object_mode(encryption)
    enc = bucket_encryption(client, bucket)
    repl = bucket_replication(client, bucket)
    # what the objects of this mount end up with
    if sse != "none":
        effective = sse
    elif enc.get("status") == "configured":
        effective = str(enc.get("mode"))
    else:
        effective = "none"
    warnings = _default_encryption_warnings(enc, encryption, sse, client_side, bucket_key,
                                            kms_key)
    replicas = _replicas(client, repl, prefix, effective, kms_key, client_side, warnings)
    return {
        "bucket": bucket,
        "prefix": prefix,
        "mount": {"encryption": encryption, "client_side": client_side, "sse": sse,
                  "kms_key_id": kms_key, "bucket_key": bucket_key,
                  "objects_stored_with": effective},
        "default_encryption": enc,
        "replication": repl,
        "replicas": replicas,
        "warnings": warnings,
    }


def _default_encryption_warnings(enc: dict[str, Any], encryption: str, sse: str,
                                 client_side: bool, bucket_key: bool,
                                 kms_key: str | None) -> list[str]:
    """How the bucket's default encryption and the mount's settings disagree."""
    if enc.get("status") == "configured":
        return _configured_default_warnings(enc, encryption, sse, client_side, bucket_key,
                                            kms_key)
    if enc.get("status") == "none" and sse == "none" and not client_side:
        return ["no bucket default encryption and no encryption by the mount: objects "
                "are stored unencrypted (AWS applies SSE-S3 to every new object anyway)"]
    if enc.get("status") in ("unsupported", "error"):
        return [f"could not read the bucket's default encryption ({enc.get('error')})"]
    return []


def _configured_default_warnings(enc: dict[str, Any], encryption: str, sse: str,
                                 client_side: bool, bucket_key: bool,
                                 kms_key: str | None) -> list[str]:
    warnings: list[str] = []
    bmode, bkey = enc.get("mode"), enc.get("kms_key_id")
    if sse == "none" and not client_side:
        warnings.append(f"mount sends no SSE (--encryption {encryption}); the bucket default "
                        f"{bmode} applies, and file contents are readable by anyone with "
                        "read access to the bucket")
    elif sse != "none" and sse != bmode:
        warnings.append(f"mount writes {sse} but the bucket default is {bmode}: the mount's "
                        "explicit headers win for its objects; objects written by other tools "
                        f"get {bmode}")
    elif sse in ("sse-kms", "dsse-kms") and kms_key and bkey and not (
            bkey == kms_key or bkey.endswith("/" + kms_key) or bkey.endswith(":" + kms_key)):
        warnings.append(f"mount uses KMS key {kms_key} but the bucket default key is {bkey}")
    if sse in ("sse-kms", "dsse-kms") and bool(enc.get("bucket_key_enabled")) != bucket_key:
        have = "on" if enc.get("bucket_key_enabled") else "off"
        want = "on" if bucket_key else "off"
        warnings.append(f"bucket default has Bucket Key {have} but the mount asks for it "
                        f"{want} (--bucket-key)")
    blocked = [t.upper() for t in enc.get("blocked_encryption_types", [])]
    if sse == "sse-c" and "SSE-C" in blocked:
        warnings.append("the bucket blocks SSE-C writes (BlockedEncryptionTypes): every "
                        "upload of this mount will fail with 403 until the bucket owner "
                        "removes SSE-C from the blocked types (PutBucketEncryption)")
    return warnings


def _replicas(client: Any, repl: dict[str, Any], prefix: str, effective: str,
              kms_key: str | None, client_side: bool, warnings: list[str]) -> list[dict[str, Any]]:
    """The enabled replication rules that cover this prefix, and how replicas are encrypted
    (their warnings appended to `warnings`)."""
    replicas = []
    for rule in repl.get("rules", []):
        rp = rule.get("prefix", "")
        if rule.get("status") != "Enabled" or not (prefix.startswith(rp) or rp.startswith(prefix)):
            continue
        dest_default = None
        if effective == "none":
            dest = rule.get("destination_bucket")
            dest_default = bucket_encryption(client, dest) if dest else None
        how, warn = replica_encryption(effective, kms_key, rule, dest_default)
        if warn:
            warnings.append(warn)
        replicas.append({"rule": rule.get("id"), "destination": rule.get("destination_bucket"),
                         "replica_encryption": how,
                         "client_side": client_side})
    return replicas


def render(rep: dict[str, Any]) -> str:
    m, enc, repl = rep["mount"], rep["default_encryption"], rep["replication"]
    lines = [f"s3://{rep['bucket']}/{rep['prefix']}"]
    layer = "client-side + " if m["client_side"] else ""
    lines.append(f"  mount encryption:        {m['encryption']} ({layer}SSE {m['sse']})")
    st = enc["status"]
    if st == "configured":
        kid = f", KMS key {enc['kms_key_id']}" if enc.get("kms_key_id") else ""
        lines.append(f"  bucket default:          {enc['algorithm']} ({enc['mode']}{kid}), "
                     f"Bucket Key {'enabled' if enc['bucket_key_enabled'] else 'disabled'}")
        if enc.get("blocked_encryption_types"):
            lines.append(f"  blocked encryption:      {', '.join(enc['blocked_encryption_types'])}")
    elif st == "none":
        lines.append("  bucket default:          none configured")
    else:
        lines.append(f"  bucket default:          unknown ({st}: {enc.get('error')})")
    lines.append(f"  objects stored with:     {m['objects_stored_with']}")
    if repl["status"] == "none":
        lines.append("  replication:             none configured")
    elif repl["status"] != "configured":
        lines.append(f"  replication:             unknown ({repl['status']}: {repl.get('error')})")
    else:
        lines.append(f"  replication:             {len(repl['rules'])} rule(s)")
        for r in repl["rules"]:
            lines.append(f"    - {r['id'] or '(no id)'} [{r['status']}] prefix {r['prefix']!r} -> "
                         f"{r['destination_bucket']}"
                         + (f", replica KMS key {r['replica_kms_key_id']}"
                            if r.get("replica_kms_key_id") else ""))
        for rp in rep["replicas"]:
            extra = " (bodies stay client-side encrypted)" if rp["client_side"] else ""
            lines.append(f"  replicas in {rp['destination']}: {rp['replica_encryption']}{extra}")
    if "history" in rep:
        from s3encfs.objectlock import render_history

        lines += render_history(rep["history"])
    for w in rep["warnings"]:
        lines.append(f"  warning: {w}")
    return "\n".join(lines)


@click.command("info")
@bucket_options(encryption_help="The mount's mode (default: client, or the config's).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--object-lock", help="The mount's --object-lock (default: the config's).")
@click.option("--sample", default=1000, show_default=True, type=click.IntRange(min=0),
              help="Object formats from HEADs of a random sample of this many objects (0: skip).")
@click.option("--all-objects", is_flag=True, help="Object formats from a HEAD of every object.")
def info(source: str | None, config_name: str | None, as_json: bool, sample: int,
         all_objects: bool, **flags: Any) -> None:
    """Bucket default encryption, replication, how replicas of this mount's objects are
    encrypted (with warnings where the mount and the bucket disagree), and which object formats
    the bucket holds (our client format, S3 Encryption Client V1/V2/V3, plain; SSE kinds)."""
    from s3encfs.config import ConfigError, MountConfig, load_config, merge, parse_encryption
    from s3encfs.store.s3 import ObjectStore

    try:
        cfg = load_config(config_name) if config_name else MountConfig()
        given = {k: v for k, v in flags.items() if v is not None}
        cfg = merge(cfg, {"source": source, **given, "mountpoint": cfg.mountpoint or "/"})
        _client, sse, sse_key = parse_encryption(cfg.encryption)
    except ConfigError as exc:
        raise exc from None  # one line + exit code: errors_cli
    if not cfg.source:
        raise click.UsageError("need s3://BUCKET[/PREFIX] (or --config NAME)")
    store = ObjectStore(cfg.bucket, endpoint_url=cfg.endpoint_url, region=cfg.region,
                        profile=cfg.profile, max_attempts=3)
    store.check_bucket()  # a missing bucket or no access: one line and its exit code, not 0
    kms_key = sse_key if sse in ("sse-kms", "dsse-kms") else None
    rep = build_report(store.client, cfg.bucket, cfg.prefix, cfg.encryption, cfg.bucket_key,
                       kms_key)
    from s3encfs.objectlock import history_report

    history_report(store.client, cfg.bucket, cfg.object_lock, rep)
    from s3encfs import formats

    if sample or all_objects:
        rep["formats"] = formats.survey(store.client, cfg.bucket, cfg.prefix,
                                        sample=None if all_objects else sample)
    if as_json:
        click.echo(json.dumps(rep, indent=2, sort_keys=True))
    else:
        click.echo("\n".join([render(rep), *formats.render(rep["formats"])]) if "formats" in rep
                   else render(rep))
