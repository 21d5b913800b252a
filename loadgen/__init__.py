"""Multiprocess load generator for the echo servers."""
