"""Exit codes of every `s3encfs` command (sysexits.h names; README.md has the table).

The systemd unit's RestartPreventExitStatus lists the codes a restart cannot fix (usage,
configuration, permission, data); the rest (S3 unreachable or failing) are retried.
"""

from __future__ import annotations

OK = 0
FAILED = 1  # the command ran and found a problem (check: damage found; flush/umount: not done)
USAGE = 2  # bad command line (click's usage errors)
DATAERR = 65  # data failed authentication or is damaged
UNAVAILABLE = 69  # S3 endpoint unreachable — transient: the service retries
SOFTWARE = 70  # a bug: an unexpected exception (one line; S3ENCFS_TRACEBACK=1 shows it)
CANTCREAT = 73  # a local file or directory (cache, log) cannot be created
TEMPFAIL = 75  # S3 answered with an error that may pass (5xx, throttling, timeout)
NOPERM = 77  # access denied, no credentials, wrong passphrase
CONFIG = 78  # configuration: missing bucket, bad option, key or mountpoint problem
INTERRUPTED = 130  # Ctrl-C

# code, meaning — rendered into README.md's table (tests check they agree)
TABLE = [
    (OK, "success"),
    (FAILED, "the command ran and the answer is no (check found damage, flush/umount timed "
             "out with uploads pending, backup's rsync failed)"),
    (USAGE, "bad command line (unknown option, missing argument)"),
    (DATAERR, "data failed authentication (wrong key for the data, tampered object)"),
    (UNAVAILABLE, "S3 endpoint unreachable (the service restarts and retries)"),
    (SOFTWARE, "internal error (a bug: please report it with S3ENCFS_TRACEBACK=1 output)"),
    (CANTCREAT, "a local file or directory (cache dir, log file) cannot be created"),
    (TEMPFAIL, "S3 failed in a way that may pass (5xx, throttling); retried by the service"),
    (NOPERM, "access denied, no AWS credentials, wrong passphrase"),
    (CONFIG, "configuration error: config file, -o option, missing bucket, keys, "
             "mountpoint busy or not empty; the service does not restart"),
    (INTERRUPTED, "interrupted (Ctrl-C)"),
]
NO_RESTART = (USAGE, DATAERR, NOPERM, CONFIG)



class MountError(Exception):
    """A clear, one-line reason why the mount cannot start; `code` is the exit status
    (78 = EX_CONFIG: systemd does not restart; see s3encfs/exitcodes.py)."""

    def __init__(self, message: str, code: int = 78) -> None:
        super().__init__(message)
        self.code = code

def for_store_error(exc: Exception) -> int:
    from s3encfs.store import errors as se

    if isinstance(exc, se.EndpointUnreachable):
        return UNAVAILABLE
    if isinstance(exc, se.AccessDenied):
        return NOPERM
    if isinstance(exc, (se.BucketMissing, se.SseNotEnforced, se.SseMismatch)):
        return CONFIG
    return TEMPFAIL
