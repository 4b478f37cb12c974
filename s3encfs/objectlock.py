"""Bucket versioning and S3 Object Lock: what a bucket keeps, and retention on what we write.

``--object-lock governance:30d`` (or ``compliance:30d``) makes every object and directory
index the mount writes carry ``x-amz-object-lock-mode`` and a retain-until date 30 days after
the write, so that nobody holding the mount's credentials can delete or overwrite that version
before then (GOVERNANCE: unless they also hold ``s3:BypassGovernanceRetention``; COMPLIANCE:
nobody, not even the account root).  Deleting a file still works: S3 adds a delete marker, the
locked version stays underneath.  Object Lock needs a versioned bucket created with Object Lock
enabled; a mount asking for it elsewhere refuses to start.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

_SPEC = re.compile(r"^(governance|compliance):(\d+)([dhy]?)$")
_UNIT = {"": 86400, "d": 86400, "h": 3600, "y": 365 * 86400}


class ObjectLockError(ValueError):
    """A bad --object-lock spec, or a bucket that cannot honour it."""


@dataclass(frozen=True)
class Retention:
    mode: str  # "GOVERNANCE" | "COMPLIANCE"
    seconds: int

    def describe(self) -> str:
        days = self.seconds / 86400
        span = f"{days:g} days" if self.seconds % 86400 == 0 else f"{self.seconds / 3600:g} hours"
        return f"{self.mode.lower()} retention for {span} after each write"

    def write_args(self) -> dict[str, Any]:
        """boto3 parameters for PutObject/CopyObject/CreateMultipartUpload, dated now."""
        until = datetime.now(UTC) + timedelta(seconds=self.seconds)
        return {"ObjectLockMode": self.mode, "ObjectLockRetainUntilDate": until}


def parse_object_lock(spec: str) -> Retention:
    """``governance:30d`` → Retention("GOVERNANCE", 30 days).  Units d (default), h, y."""
    m = _SPEC.match(spec.strip().lower())
    if not m or int(m.group(2)) < 1:
        raise ObjectLockError(f"object lock must look like governance:30d or compliance:30d "
                              f"(units d, h, y), got {spec!r}")
    return Retention(m.group(1).upper(), int(m.group(2)) * _UNIT[m.group(3)])


@dataclass
class Protection:
    """What a bucket keeps: versioning, Object Lock default, noncurrent-version expiry."""

    versioning: str  # "Enabled" | "Suspended" | "" (never enabled)
    object_lock: bool
    default_retention: str | None  # e.g. "GOVERNANCE 30 days"
    noncurrent_expiry_days: int | None  # shortest NoncurrentVersionExpiration of an enabled rule
    errors: list[str]


def _call(fn: Callable[..., Any], **kw: Any) -> tuple[dict[str, Any] | None, str]:
    try:
        return fn(**kw), ""
    except ClientError as exc:
        return None, str(exc.response.get("Error", {}).get("Code", "") or exc)
    except BotoCoreError as exc:
        return None, str(exc)


def bucket_protection(client: Any, bucket: str) -> Protection:
    errors: list[str] = []
    vers, err = _call(client.get_bucket_versioning, Bucket=bucket)
    if vers is None:
        errors.append(f"GetBucketVersioning: {err}")
    lock, err = _call(client.get_object_lock_configuration, Bucket=bucket)
    enabled, default = False, None
    if lock is not None:
        conf = lock.get("ObjectLockConfiguration", {}) or {}
        enabled = conf.get("ObjectLockEnabled") == "Enabled"
        rule = (conf.get("Rule") or {}).get("DefaultRetention") or {}
        if rule:
            n = rule.get("Days") or rule.get("Years")
            unit = "days" if rule.get("Days") else "years"
            default = f"{rule.get('Mode')} {n} {unit}"
    elif err not in ("ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration",
                     "NotImplemented"):
        errors.append(f"GetObjectLockConfiguration: {err}")
    life, err = _call(client.get_bucket_lifecycle_configuration, Bucket=bucket)
    expiry = None
    if life is not None:
        for r in life.get("Rules", []) or []:
            days = (r.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays")
            if r.get("Status") == "Enabled" and days:
                expiry = days if expiry is None else min(expiry, int(days))
    elif err not in ("NoSuchLifecycleConfiguration", "NotImplemented"):
        errors.append(f"GetBucketLifecycleConfiguration: {err}")
    return Protection(str((vers or {}).get("Status") or ""), enabled, default, expiry, errors)


def explain(p: Protection, retention: Retention | None) -> list[str]:
    """Plain sentences: what the bucket's settings and the mount's --object-lock mean together."""
    out = []
    if p.versioning != "Enabled":
        out.append("versioning is off: an overwrite or delete (say, a nightly rsync of a "
                   "ransomware-encrypted host) destroys the old data; there is nothing to "
                   "--as-of mount or restore")
    else:
        out.append("versioning is on: every overwrite and delete keeps the old version; "
                   "`mount --as-of TIME` and `restore` can bring any of them back")
        if p.noncurrent_expiry_days is None:
            out.append("WARNING: no lifecycle rule expires noncurrent versions — old versions "
                       "are kept (and billed) forever")
        else:
            out.append(f"old versions are deleted {p.noncurrent_expiry_days} days after they "
                       "stop being current: restore points reach that far back")
    if retention is not None:
        if not p.object_lock:
            out.append("--object-lock is set, but this bucket has no Object Lock: the mount "
                       "refuses to start")
        else:
            out.append(f"every object the mount writes gets {retention.describe()}: no one with "
                       "this host's credentials can delete those versions before then"
                       + (" (GOVERNANCE: unless allowed to bypass governance retention)"
                          if retention.mode == "GOVERNANCE" else ""))
            if p.noncurrent_expiry_days is not None and \
                    p.noncurrent_expiry_days * 86400 < retention.seconds:
                out.append("the lifecycle rule expires noncurrent versions before their "
                           "retention ends: S3 keeps them until retention ends anyway")
    elif p.object_lock and p.default_retention:
        out.append(f"the bucket's default retention ({p.default_retention}) applies to "
                   "everything written")
    elif p.object_lock:
        out.append("Object Lock is enabled but neither a default retention nor --object-lock "
                   "is set: nothing is protected from deletion")
    return out


def require_lockable(client: Any, bucket: str) -> None:
    """Refuse (ObjectLockError) unless versioning and Object Lock are both enabled."""
    p = bucket_protection(client, bucket)
    if p.versioning != "Enabled":
        raise ObjectLockError(
            f"--object-lock needs a versioned bucket, and s3://{bucket} has versioning "
            f"{(p.versioning or 'never enabled').lower()}: create the bucket with Object Lock "
            "enabled (aws s3api create-bucket --object-lock-enabled-for-bucket), or drop "
            "--object-lock")
    if not p.object_lock:
        raise ObjectLockError(
            f"--object-lock needs Object Lock enabled on s3://{bucket} (it can only be enabled "
            "on a versioned bucket, usually at creation), or drop --object-lock")


def history_report(client: Any, bucket: str, object_lock: str | None,
                   rep: dict[str, Any]) -> None:
    """Add a "history" section (and its warnings) to an `info` report."""
    p = bucket_protection(client, bucket)
    retention = parse_object_lock(object_lock) if object_lock else None
    meaning = explain(p, retention)
    rep["history"] = {
        "versioning": p.versioning or "never enabled",
        "object_lock": p.object_lock,
        "default_retention": p.default_retention,
        "noncurrent_version_expiry_days": p.noncurrent_expiry_days,
        "mount_object_lock": retention.describe() if retention else None,
        "meaning": [m for m in meaning if not m.startswith("WARNING: ")],
        "errors": p.errors,
    }
    rep["warnings"] += [m[len("WARNING: "):] for m in meaning if m.startswith("WARNING: ")]
    if retention is not None and not p.object_lock:
        rep["warnings"].append("--object-lock is set but the bucket has no Object Lock: "
                               "the mount refuses to start")


def render_history(h: dict[str, Any]) -> list[str]:
    lines = [f"  versioning:              {h['versioning']}",
             "  object lock:             "
             + ("enabled" if h["object_lock"] else "not enabled")
             + (f", default retention {h['default_retention']}" if h["default_retention"]
                else ", no default retention" if h["object_lock"] else ""),
             "  noncurrent versions:     "
             + (f"expire after {h['noncurrent_version_expiry_days']} days"
                if h["noncurrent_version_expiry_days"] else "kept forever (no lifecycle rule)"),
             f"  mount object lock:       {h['mount_object_lock'] or 'none'}"]
    lines += [f"  - {m}" for m in h["meaning"]]
    return lines


def retention_problems(store: Any, keys: list[str], retention: Retention,
                       jobs: int = 8) -> list[tuple[str, str]]:
    """(key, problem) for every current object without `retention`'s mode and a retain-until
    date still ahead (directory markers skipped: SeaweedFS keeps no lock on them, and they
    hold no data)."""
    from concurrent.futures import ThreadPoolExecutor

    now = datetime.now(UTC)

    def one(key: str) -> tuple[str, str] | None:
        if key.endswith("/"):
            return None
        head = store._with_read_key(key, lambda a: store._call(
            "HeadObject", key, store.client.head_object, Key=key, **a))
        mode, until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
        if mode != retention.mode:
            return key, f"retention {mode or 'none'}, expected {retention.mode}"
        if until is None or until <= now:
            return key, f"retention expired ({until})"
        return None

    with ThreadPoolExecutor(jobs) as pool:
        return [r for r in pool.map(one, keys) if r is not None]
