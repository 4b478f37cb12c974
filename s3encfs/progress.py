"""Progress reporting: a rich bar on a terminal, plain periodic lines in logs and pipes."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Protocol


class Progress(Protocol):
    def advance(self, n: int = 1) -> None: ...


class PlainProgress:
    """Prints ``description: done/total (pct%)`` at most every ``interval`` seconds."""

    def __init__(
        self, total: int | None, description: str, stream: IO[str], interval: float = 5.0
    ) -> None:
        self.total, self.description, self.stream, self.interval = (
            total,
            description,
            stream,
            interval,
        )
        self.done = 0
        self._start = self._last = time.monotonic()

    def _line(self) -> str:
        if self.total:
            pct = 100.0 * self.done / self.total
            return f"{self.description}: {self.done}/{self.total} ({pct:.0f}%)"
        return f"{self.description}: {self.done}"

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            print(self._line(), file=self.stream, flush=True)

    def finish(self) -> None:
        elapsed = time.monotonic() - self._start
        print(f"{self._line()} done in {elapsed:.1f}s", file=self.stream, flush=True)


class _RichProgress:
    def __init__(self, bar: object, task: object) -> None:
        self._bar, self._task = bar, task

    def advance(self, n: int = 1) -> None:
        self._bar.advance(self._task, n)  # type: ignore[attr-defined]


@contextmanager
def progress(
    total: int | None, description: str, stream: IO[str] | None = None, interval: float = 5.0
) -> Iterator[Progress]:
    """``with progress(n, "uploading") as p: p.advance(k)``."""
    out = stream if stream is not None else sys.stdout
    if out.isatty():
        from rich.progress import Progress as RichBar

        with RichBar(transient=False) as bar:
            task = bar.add_task(description, total=total)
            yield _RichProgress(bar, task)
        return
    plain = PlainProgress(total, description, out, interval)
    yield plain
    plain.finish()
