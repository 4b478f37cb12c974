"""Run a memory-hard key derivation in a short-lived child process (issue 15, memory).

Argon2id at RFC 9106's second setting needs 64 MiB (scrypt n=2^15, r=8: 32 MiB) for a fraction
of a second.  Derived in the mount's own process, that allocation stays in its peak RSS
(VmHWM) for the life of the mount, although it is freed at once: the daemon's peak then says
more about the keyring than about what the mount holds.  So a derivation that needs at least
`CHILD_MIN_BYTES` runs in a fresh interpreter (`python -I`, which imports only `cryptography`)
that reads its parameters and the passphrase from a pipe and writes the 32-byte key back on
another; nothing touches the disk, nothing is logged, the child's stderr is never shown (it
could only ever hold a traceback, never the pipe's contents).  Cheap derivations (tests'
parameters) stay in process.  If the child cannot be started at all, the derivation runs in
process (the same result; only the peak differs) and that is logged without any detail of
the key.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger("s3encfs.keys")

CHILD_MIN_BYTES = 16 * 1024 * 1024
TIMEOUT = 300.0  # a KDF of MAX_ARGON2_M (4 GiB) on a slow machine; never reached normally

# The child: the request is one JSON line, then the raw passphrase; the answer is the key.
_CHILD = r"""
import json, sys
req = json.loads(sys.stdin.buffer.readline())
pw = sys.stdin.buffer.read()
salt = bytes.fromhex(req["salt"])
if req["alg"] == "argon2id":
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
    kdf = Argon2id(salt=salt, length=32, iterations=req["t"], lanes=req["p"],
                   memory_cost=req["m"])
else:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
    kdf = Scrypt(salt=salt, length=32, n=req["n"], r=req["r"], p=req["p"])
sys.stdout.buffer.write(kdf.derive(pw))
sys.stdout.buffer.flush()
"""


class KdfChildError(Exception):
    """The child ran but gave no key (killed, out of memory, a library without the KDF)."""


def memory_bytes(alg: str, params: dict[str, int]) -> int:
    """What the derivation allocates: Argon2id m KiB, scrypt 128 * r * n bytes."""
    return params["m"] * 1024 if alg == "argon2id" else 128 * params["r"] * params["n"]


def derive(alg: str, params: dict[str, int], salt: bytes, passphrase: bytes,
           in_process: Callable[[], bytes]) -> bytes:
    """The 32-byte key of `alg` with validated integer `params` ("t", "p", "m" or "n", "r",
    "p") over `salt` and `passphrase`: in a child process when it needs at least
    `CHILD_MIN_BYTES`, else (or if no child can be started) by `in_process()`."""
    if memory_bytes(alg, params) < CHILD_MIN_BYTES:
        return in_process()
    request: dict[str, Any] = {"alg": alg, "salt": salt.hex(), **params}
    try:
        proc = subprocess.run([sys.executable, "-I", "-c", _CHILD],
                              input=json.dumps(request).encode() + b"\n" + passphrase,
                              capture_output=True, timeout=TIMEOUT, env={}, check=False)
    except subprocess.TimeoutExpired:
        raise KdfChildError(f"the key derivation ({alg}) in a child process did not finish "
                            f"within {TIMEOUT:.0f} s") from None
    except OSError as exc:
        log.warning("key derivation runs in the mount's own process (no child process: %s)",
                    type(exc).__name__)
        return in_process()
    if proc.returncode != 0 or len(proc.stdout) != 32:
        raise KdfChildError(f"the key derivation ({alg}) in a child process failed "
                            f"(exit status {proc.returncode})")
    return proc.stdout
