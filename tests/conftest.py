import functools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import ServerProc  # noqa: E402


@pytest.fixture
def start_server(tmp_path):
    """start_server(mechanism, *extra_args, prelude=None) -> ServerProc; killed at teardown."""
    started = []

    def start(mechanism, *extra, prelude=None):
        s = ServerProc(mechanism, tmp_path, *extra, prelude=prelude)
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()


@functools.cache
def uring_unavailable() -> str | None:
    """Why io_uring cannot serve here (measured once per session), or None."""
    from servers import uring_loop
    return uring_loop.unavailable()


@pytest.fixture(autouse=True)
def _skip_unavailable_io_uring(request):
    """A test parametrized with mechanism=io_uring skips, with the reason, where it cannot run."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("mechanism") == "io_uring":
        why = uring_unavailable()
        if why:
            pytest.skip(f"io_uring not available here: {why}")
