"""Run a function in a fresh spawned interpreter and get its result back (micro and probes)."""

from __future__ import annotations

import multiprocessing


class ChildFailed(RuntimeError):
    """A child process died, timed out or raised; the message says which."""


def run_in_child(fn, *args, timeout_s: float = 60.0):
    """Run fn(*args) in a fresh spawned interpreter and return its result.

    Raises ChildFailed if the child raises, dies or exceeds timeout_s; the
    child is killed on every exit path.
    """
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(send, fn, args), daemon=True)
    proc.start()
    send.close()
    ok = None
    try:
        if not recv.poll(timeout_s):
            raise ChildFailed(f"{fn.__name__}: no result within {timeout_s:.0f} s")
        ok, value = recv.recv()
    except EOFError:
        proc.join(5)
        raise ChildFailed(f"{fn.__name__}: child exited with {proc.exitcode} and no result") from None
    finally:
        recv.close()
        if ok is not None:
            proc.join(10)                  # let it close its descriptors before the next one
        if proc.is_alive():
            proc.kill()
            proc.join()
    if not ok:
        raise ChildFailed(value)
    return value


def _child_main(conn, fn, args):
    try:
        result = (True, fn(*args))
    except BaseException as e:             # the parent records it; the run goes on
        result = (False, f"{fn.__name__}: {type(e).__name__}: {e}")
    conn.send(result)
    conn.close()
