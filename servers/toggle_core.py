"""The epoll-toggle reference's core: the shared Server, with writes deferred.

Not part of the core every server shares: it breaks the echo-at-once rule on
purpose, to price the style the seed explanation teaches. Each recv is
buffered whole and reading stops until it is sent, so on_ready asks for
WRITE alone and then READ alone: EPOLLIN -> EPOLLOUT -> EPOLLIN per message.
Everything else (accept, flush, back-pressure, close, statistics) is the
shared Server's.
"""

from __future__ import annotations

from .core import BUFSIZE, Conn, Server


class DeferredWriteServer(Server):
    """A Server whose every echo waits for the loop to report the socket writable."""

    def _read(self, conn: Conn) -> bool:
        """recv once, buffer the echo whole, stop reading until it is sent.

        At most one recv (BUFSIZE < HIGH_WATER) is ever buffered, so
        back-pressure holds; False when the connection must close.
        """
        try:
            data = conn.sock.recv(BUFSIZE)
        except BlockingIOError:
            return True
        except OSError as e:
            return self._failed(e)
        conn.reading = False
        if not data:                                # FIN; nothing is unsent while reading
            self.stats.closed["peer"] += 1
            return False
        self.stats.bytes_in += len(data)
        conn.out += data
        return True
