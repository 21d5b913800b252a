"""Echo server loop on io_uring(7) readiness: multishot IORING_OP_POLL_ADD.

Facts about io_uring poll that shape this loop:

- IORING_OP_POLL_ADD with IORING_POLL_ADD_MULTI (Linux 5.13) is one
  submission that posts a completion (CQE, res = the poll mask) each time
  the socket's wait queue wakes, flagged IORING_CQE_F_MORE while it stays
  armed. It is edge-triggered: data left unread after a CQE raises no new
  one (checked on this kernel). So, like epoll-et, the core runs with
  edge=True (read and accept until EAGAIN) and each fd is armed once for
  POLLIN|POLLOUT|POLLRDHUP; compare it with epoll-et, which does the same
  recv and send calls.
- A CQE's mask is the wake-up's, not the socket's state: the kernel keeps
  the key the waker passed (data arriving says POLLIN, freed send space
  says POLLOUT) where epoll re-polls the file. Checked here: a POLLOUT CQE
  came while 1000 bytes sat unread. So a POLLOUT that drains a
  back-pressured connection does not say data is queued, and no new edge
  will; the loop reports every CQE as readable and the core's recv finds
  the data or EAGAIN (the back-pressure test stalled without this).
- The kernel ends a multishot poll with a CQE lacking IORING_CQE_F_MORE
  when it is removed, fails, or cannot post because the completion ring is
  full (Linux 6.0 "fix multishot poll on overflow"). Such a CQE still
  carries readiness: the loop delivers it and arms the fd afresh.
- Interest changes become submissions: a new fd is one POLL_ADD, CLOSED is
  one POLL_REMOVE by user_data. A mask never changes (the core's edge mode
  never asks), so IORING_POLL_UPDATE_EVENTS, the in-place update, is not
  needed. The request holds a reference to the file, so close() frees the
  fd number at once but the socket (and its FIN) only when the remove runs.
- The kernel reuses fd numbers, so user_data is generation << 32 | fd and
  a CQE whose user_data is not the fd's current one (a removed poll's last
  words, the remove's own CQE) is skipped.
- Submissions only queue in the shared SQ ring; one io_uring_enter carries
  every one queued since the last, and the same call waits
  (io_uring_submit_and_wait). Only a full SQ (ENTRIES) forces an extra
  enter. enter_calls and sqes count both, for submissions per enter.
- The CQ ring (2 x ENTRIES CQEs, 16 bytes each) is shared memory mmap-ed
  from the ring fd: reaping reads it and stores the new head; no copy and
  no system call.
  The binding's cqe[i] does not wrap at the ring's end, so the loop reads
  through CqeIter and advances the head once per batch.
- A signal interrupts the wait with EINTR (no PEP 475 retry here): the
  loop goes round, and the signal's byte on the wakeup fd ends the wait.
"""

import errno
import os
import select
import socket
from time import perf_counter_ns

from .core import CLOSED, Server

try:
    import liburing as L
except ImportError as e:                     # refused with the reason, not at import
    L, _IMPORT_ERROR = None, f"{type(e).__name__}: {e}"

NAME = "io_uring"
FD_LIMIT = None
ENTRIES = 4096       # SQ size; the CQ gets twice as many (kernel maximum 32768)
SETUP_FLAGS = 0      # none: runs from 5.13; COOP_TASKRUN, DEFER_TASKRUN: open question
_MASK = select.POLLIN | select.POLLOUT | select.POLLRDHUP
_FD = (1 << 32) - 1                          # user_data = generation << 32 | fd

_WRITABLE = ~select.POLLIN    # anything but POLLIN wakes the writer


def unavailable() -> str | None:
    """None if a multishot poll works here; else why not, in one line.

    Measured, not assumed: set up a ring of ENTRIES, arm a multishot poll on
    a ready socket and check its CQE, as the loop will.
    """
    if L is None:
        return (f"the liburing package is not importable ({_IMPORT_ERROR}): "
                "pip install 'liburing>=2026.3.25,<2027'")
    ring = L.Ring()
    try:
        L.io_uring_queue_init(ENTRIES, ring)
    except OSError as e:
        return f"io_uring_setup refused a {ENTRIES}-entry ring: {_errno(e)}{_setup_hint(e)}"
    a, b = socket.socketpair()
    try:
        b.send(b"x")
        sqe = L.io_uring_get_sqe(ring)
        L.io_uring_prep_poll_multishot(sqe, a.fileno(), select.POLLIN)
        sqe.user_data = 1
        L.io_uring_submit_and_wait(ring, 1)
        cqe = L.Cqe()
        L.io_uring_peek_cqe(ring, cqe)
        try:
            ok = cqe[0].res & select.POLLIN and cqe[0].flags & L.IORING_CQE_F_MORE
        except OSError as e:
            return (f"multishot poll refused: {_errno(e)}; it needs Linux 5.13+ "
                    f"({os.uname().release} here)")
        if not ok:
            return "a multishot poll posted no readiness with IORING_CQE_F_MORE: needs Linux 5.13+"
    except OSError as e:
        return f"io_uring_enter failed: {_errno(e)}"
    finally:
        a.close(), b.close()
        L.io_uring_queue_exit(ring)
    return None


def make_server(name: str, host: str, port: int, snapshots: str | None = None) -> Server:
    """The core server, once a probe ring works; RuntimeError (exit 1) says why not."""
    why = unavailable()
    if why:
        raise RuntimeError(f"io_uring is not available here: {why}")
    return Server(name, host, port, edge=True, snapshots=snapshots)


def run(server: Server) -> None:
    ring, cqe = L.Ring(), L.Cqe()
    L.io_uring_queue_init(ENTRIES, ring, SETUP_FLAGS)
    armed: dict[int, int] = {}               # fd -> user_data of its live poll
    counters = server.stats.extra            # io_uring_enter calls, SQEs queued, re-arms
    counters.update(enter_calls=0, sqes=0, rearmed=0)
    generation = 0

    def sqe():
        s = L.io_uring_get_sqe(ring)
        if s is None:                        # SQ full: submit now, one more enter
            L.io_uring_submit(ring)
            counters["enter_calls"] += 1
            s = L.io_uring_get_sqe(ring)
        counters["sqes"] += 1
        return s

    def arm(fd):
        nonlocal generation
        generation += 1
        s = sqe()
        L.io_uring_prep_poll_multishot(s, fd, _MASK)
        s.user_data = armed[fd] = generation << 32 | fd

    def apply(changes):
        for fd, want in changes:
            if want == CLOSED:
                s = sqe()                    # forget fd before close() frees its number
                L.io_uring_prep_poll_remove(s, armed.pop(fd))
                s.user_data = 0
                apply(server.close(fd))      # may accept at once after EMFILE
            elif fd not in armed:
                arm(fd)                      # once, for both directions

    try:
        apply([(server.listen_fd, 0), (server.wakeup_fd, 0)])
        on_ready, stats = server.on_ready, server.stats
        clock, wait_hist, events_hist = perf_counter_ns, stats.wait_hist, stats.events_hist
        most = len(events_hist) - 1          # the exact table's size bounds one batch
        while server.running:
            t0 = clock()
            try:
                L.io_uring_submit_and_wait(ring, 1)
            except InterruptedError:
                pass                         # the signal's byte on wakeup_fd ends the next wait
            ready = min(L.io_uring_cq_ready(ring), most)
            wait_ns = clock() - t0
            stats.wait_ns_total += wait_ns   # inline: a call would cost more (core.Stats)
            wait_hist[wait_ns.bit_length()] += 1
            events_hist[ready] += 1
            counters["enter_calls"] += 1
            for i in L.CqeIter(ring, cqe):
                if i == ready:               # later CQEs wait for the next pass
                    break
                c = cqe[0]
                ud = c.user_data
                fd = ud & _FD
                if armed.get(fd) != ud:
                    continue                 # a removed poll's last words
                try:
                    res = c.res
                except OSError as e:
                    raise RuntimeError(f"multishot poll on fd {fd} failed: {_errno(e)}") from None
                if not c.flags & L.IORING_CQE_F_MORE:
                    arm(fd)                  # the kernel ended it (CQ full): re-arm
                    counters["rearmed"] += 1
                changes = on_ready(fd, True, res & _WRITABLE)   # True: see the header
                if changes:
                    apply(changes)
            L.io_uring_cq_advance(ring, ready)
    finally:
        L.io_uring_queue_exit(ring)


def _errno(e: OSError) -> str:
    return f"{errno.errorcode.get(e.errno, e.errno)} ({e.strerror})"


def _setup_hint(e: OSError) -> str:
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            disabled = f.read().strip()
    except OSError:
        disabled = "0"
    if e.errno == errno.EPERM and disabled != "0":
        return f"; kernel.io_uring_disabled = {disabled}: set it to 0 (or join io_uring_group)"
    if e.errno in (errno.EPERM, errno.ENOSYS):
        return "; a seccomp filter or a kernel without CONFIG_IO_URING refuses it"
    if e.errno == errno.EINVAL:
        return "; the kernel allows 1 to IORING_MAX_ENTRIES (32768) entries"
    return ""

