"""Signals during a sweep: Ctrl-C, SIGTERM and SIGHUP stop it, but never mid-write."""

from __future__ import annotations

import contextlib
import signal


class Signals:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt, but never inside critical()."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __enter__(self):
        self._pending = None
        self._critical = False
        self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)

    def _handle(self, signum, frame):
        if self._critical:
            self._pending = signum
        else:
            raise KeyboardInterrupt

    def hold(self):
        """Defer signals for good: the run is ending and must finish its writes."""
        self._critical = True

    @contextlib.contextmanager
    def critical(self):
        """Finish the writes inside before acting on a signal that arrives meanwhile."""
        self._critical = True
        try:
            yield
        finally:
            self._critical = False
        if self._pending is not None:
            raise KeyboardInterrupt
