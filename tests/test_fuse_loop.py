"""s3encfs/fuse_loop.py: pyfuse3's read lock and fd wait without needless scheduler passes,
and with pyfuse3's guarantees kept (one reader of the fd at a time; a blocked handler never
stalls the next request)."""

from __future__ import annotations

import socket

import trio
import trio.testing

from s3encfs import fuse_loop


def test_a_free_read_lock_is_taken_without_a_scheduler_pass():
    async def main() -> None:
        lock = fuse_loop._ReadLock()
        with trio.testing.assert_no_checkpoints():
            async with lock:
                pass
            async with lock:  # released and taken again by the same task: still no pass
                pass

    trio.run(main)


def test_read_lock_excludes_and_passes_on_when_the_holder_blocks():
    """Two tasks never hold it at once; a holder that releases it and then blocks (a handler
    waiting for S3) leaves it to a waiter, which must not wait for that handler."""
    async def main() -> None:
        lock = fuse_loop._ReadLock()
        inside: list[str] = []
        order: list[str] = []
        release_a = trio.Event()

        async def a() -> None:
            async with lock:
                inside.append("a")
                await release_a.wait()
                assert inside == ["a"]
                inside.remove("a")
            order.append("a released")
            await trio.sleep_forever()  # its handler blocks

        async def waiter(name: str) -> None:
            async with lock:
                assert not inside
                inside.append(name)
                await trio.sleep(0.01)
                inside.remove(name)
            order.append(f"{name} done")

        with trio.move_on_after(5) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(waiter, "b")
                nursery.start_soon(waiter, "c")
                await trio.testing.wait_all_tasks_blocked()
                release_a.set()
                while len(order) < 3:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        assert not scope.cancelled_caught, order
        assert order[0] == "a released" and sorted(order[1:]) == ["b done", "c done"]

    trio.run(main)


def test_a_readable_fd_is_taken_at_once_but_not_for_ever():
    """A request already queued is read without a scheduler pass, at most BURST in a row;
    an fd with nothing to read is waited for the ordinary way."""
    async def main() -> None:
        poller = fuse_loop._Poller()
        r, w = socket.socketpair()
        with r, w:
            w.send(b"x")
            with trio.testing.assert_no_checkpoints():
                for _ in range(fuse_loop.BURST):
                    await poller.wait_readable(r.fileno())
            with trio.testing.assert_checkpoints():
                await poller.wait_readable(r.fileno())  # the burst is over: one real wait
            r.recv(1)
            with trio.move_on_after(0.2) as scope:
                await poller.wait_readable(r.fileno())  # nothing queued: it waits
            assert scope.cancelled_caught
        assert poller.fast == fuse_loop.BURST and poller.waited == 2

    trio.run(main)


def test_install_points_pyfuse3_at_the_shim():
    import pyfuse3

    saved = pyfuse3.trio  # type: ignore[attr-defined]
    try:
        fuse_loop.install()
        shim = pyfuse3.trio  # type: ignore[attr-defined]
        assert shim.Lock is fuse_loop._ReadLock
        assert shim.lowlevel.wait_readable == fuse_loop.POLLER.wait_readable
        # everything else pyfuse3 uses is trio's own
        assert shim.lowlevel.current_trio_token is trio.lowlevel.current_trio_token
        assert shim.lowlevel.notify_closing is trio.lowlevel.notify_closing
        assert shim.ClosedResourceError is trio.ClosedResourceError
    finally:
        pyfuse3.trio = saved  # type: ignore[attr-defined]
