"""The options every command that opens a bucket takes (check, rekey, info), in one place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def bucket_options(encryption_help: str, key_help: str | None = None) -> Callable[[F], F]:
    """SOURCE, --config, the encryption mode, keys (when `key_help` is given) and the S3
    connection. Help texts differ per command: `rekey --encryption` names the target mode."""

    def apply(f: F) -> F:
        decorators = [
            click.argument("source", required=False),
            click.option("--config", "config_name",
                         help="Take settings from a mount config (name or path)."),
            click.option("--encryption", help=encryption_help),
            click.option("--bucket-key/--no-bucket-key", default=None,
                         help="S3 Bucket Keys for SSE-KMS."),
        ]
        if key_help is not None:
            decorators += [click.option("--key", help=key_help),
                           click.option("--keyring", help="Key store directory.")]
        decorators += [click.option("--endpoint-url"), click.option("--region"),
                       click.option("--profile"),
                       click.option("--read-unencrypted", is_flag=True, default=None,
                                    help="sse-c: also read objects stored without SSE-C."),
                       click.option("--allow-insecure-http", is_flag=True, default=None,
                                    help="sse-c: allow http:// to a non-loopback endpoint.")]
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply
