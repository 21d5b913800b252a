"""Command-line plumbing shared by servers, loadgen and bench: one-line errors."""

from __future__ import annotations

import argparse
import ipaddress
import sys


class UsageError(Exception):
    """Bad usage: a wrong flag or value (exit 2)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad usage in one line naming the fix, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def die(prog: str, message: str, code: int = 1):
    """Print one line to stderr and exit; 1 = runtime or environment, 2 = usage."""
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 meaning any free one."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: give a number 0-65535") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {port}: give a number 0-65535")
    return port


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
