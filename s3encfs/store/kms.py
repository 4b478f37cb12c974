"""SSE-KMS key aliases: resolved to the key ARN once at mount, so responses are compared
against the key the alias pointed to then (not "any key id", as before).

AWS answers SSE-KMS requests with the key ARN, never the alias; without a resolution an alias
accepted whatever key id came back. `resolve_alias` asks KMS DescribeKey; a server without it
(SeaweedFS, whose KMS is internal) is logged, and the policy then pins the first key id a
response names (the mount-time canary) and holds every later response to it.
"""

from __future__ import annotations

import logging
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .sse import KmsLikePolicy

log = logging.getLogger("s3encfs.store")


def is_alias(key_id: str | None) -> bool:
    return bool(key_id) and (str(key_id).startswith("alias/") or ":alias/" in str(key_id))


def resolve_alias(policy: Any, *, endpoint_url: str | None = None, region: str | None = None,
                  profile: str | None = None) -> str | None:
    """Set `policy.resolved_key` to the ARN the alias names; None (logged) when DescribeKey
    is unavailable or refused. A no-op for policies without an alias."""
    if not isinstance(policy, KmsLikePolicy) or not is_alias(policy.kms_key_id):
        return None
    try:
        session = boto3.session.Session(profile_name=profile, region_name=region)
        kms = session.client("kms", endpoint_url=endpoint_url,
                             config=Config(retries={"mode": "standard", "max_attempts": 2},
                                           connect_timeout=5, read_timeout=10))
        meta = kms.describe_key(KeyId=policy.kms_key_id)["KeyMetadata"]
        arn = str(meta["Arn"])
    except (ClientError, BotoCoreError, KeyError, ValueError) as exc:
        log.warning("cannot resolve SSE-KMS alias %s with KMS DescribeKey (%s): responses "
                    "are held to the first key id the server names instead",
                    policy.kms_key_id, type(exc).__name__)
        return None
    policy.resolved_key = arn
    log.info("SSE-KMS alias %s resolves to %s", policy.kms_key_id, arn)
    return arn
