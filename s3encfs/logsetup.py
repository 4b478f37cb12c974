"""Logging for the mount: journal-friendly under systemd, timestamped in a terminal."""

from __future__ import annotations

import logging
import os
import re
import sys

ROOT = "s3encfs"
SUBSYSTEMS = ("fs", "store", "cache", "crypto", "keys", "journal", "control", "sdnotify")

# syslog priorities understood by journald's stream parser ("<N>" line prefix)
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}

# Long hex / base64 runs and key=value pairs whose name says secret.
_SECRET_KV = re.compile(
    r"(?i)\b((?:secret|passphrase|password|token|sse[-_]?c?[-_]?key|data[-_]?key|key[-_]?material|"
    r"aws_secret_access_key|customer[-_]?key)\w*)(\s*[=:]\s*)(['\"]?)"
    # a lower-case word followed by a space is prose ("no passphrase: set S3ENCFS_…"), not a
    # secret: leave error messages readable (key material is caught by the hex/base64 rules)
    r"(?![a-z]+\s)[^\s'\",}]+"
)
_LONG_HEX = re.compile(r"\b[0-9a-fA-F]{32,}\b")
# A run with no upper-case letter and no '+' is not base64 key material but an object key:
# client-mode names are lower-case base32 and must stay readable in logs (tamper reports).
_LONG_B64 = re.compile(
    r"(?<![\w/+])(?![a-z0-9/]+(?![\w/+=]))[A-Za-z0-9+/]{40,}={0,2}(?![\w/+=])"
)


def redact(text: str) -> str:
    """Replace anything that looks like key material with ``[REDACTED]``."""
    text = _SECRET_KV.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}[REDACTED]", text)
    text = _LONG_HEX.sub("[REDACTED]", text)
    return _LONG_B64.sub("[REDACTED]", text)


class RedactingFilter(logging.Filter):
    """Last line of defence: a key must never reach the journal, even via a repr in an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JournalFormatter(logging.Formatter):
    """``<N>logger: message`` — journald adds time and unit, and reads the priority prefix."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno)
        if prio is None:
            prio = 3 if record.levelno > logging.WARNING else 6
        text = super().format(record)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def under_journal() -> bool:
    """True when stderr is connected to journald (systemd sets JOURNAL_STREAM=dev:ino)."""
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


TIMESTAMPED = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LOG_FILE_BYTES = 10 * 1024 * 1024  # a --log-file rotates at this size, keeping 3 old files


def setup_logging(
    debug: list[str] | None, foreground: bool, level: str | int = logging.INFO,
    log_file: str | None = None,
) -> logging.Logger:
    """Configure the ``s3encfs`` logger tree; ``debug`` names subsystems ("fs", "store", "all").

    ``log_file``: write there (timestamped, rotated at 10 MiB) instead of stderr.
    Idempotent: handlers installed by an earlier call are replaced.
    """
    root = logging.getLogger(ROOT)
    for old in list(root.handlers):
        if getattr(old, "_s3encfs", False):
            root.removeHandler(old)
            old.close()
    root.addHandler(_handler(log_file))
    root.propagate = False
    root.setLevel(level if isinstance(level, int) else logging.getLevelName(level.upper()))
    _debug_subsystems(root, debug)
    return root


def _handler(log_file: str | None) -> logging.Handler:
    """A rotating file (timestamped), or stderr: journald's format under systemd, else
    timestamped (a terminal, or a file stderr was redirected to: both need the time)."""
    handler: logging.Handler
    if log_file:
        from logging.handlers import RotatingFileHandler

        handler = RotatingFileHandler(log_file, maxBytes=LOG_FILE_BYTES, backupCount=3)
        handler.setFormatter(logging.Formatter(TIMESTAMPED))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter() if under_journal()
                             else logging.Formatter(TIMESTAMPED))
    handler._s3encfs = True  # type: ignore[union-attr]
    handler.addFilter(RedactingFilter())
    return handler


def _debug_subsystems(root: logging.Logger, debug: list[str] | None) -> None:
    names: list[str] = []
    for item in debug or []:
        names.extend(n.strip() for n in item.split(",") if n.strip())
    for sub in SUBSYSTEMS:
        logging.getLogger(f"{ROOT}.{sub}").setLevel(logging.NOTSET)
    if "all" in names:
        root.setLevel(logging.DEBUG)
    # Propagated records are checked against handler levels only, so a child at DEBUG
    # emits through the root handler while the other subsystems stay at the root level.
    for name in names:
        if name != "all":
            logging.getLogger(f"{ROOT}.{name}").setLevel(logging.DEBUG)
