import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import ServerProc  # noqa: E402


@pytest.fixture
def start_server(tmp_path):
    """start_server(mechanism, *extra_args) -> ServerProc; killed at teardown."""
    started = []

    def start(mechanism, *extra):
        s = ServerProc(mechanism, tmp_path, *extra)
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()
