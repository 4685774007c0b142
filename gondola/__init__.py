"""Gondola's shared kernel: contracts, clock, hub, errors and the CLI."""

__version__ = "0.1.0"
