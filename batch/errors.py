"""The errors a batch run ends with (the CLI maps them to exit codes)."""

from __future__ import annotations


class BatchError(Exception):
    """A run that cannot go on: bad input, bad options, a refused version (exit code 2, or 1 when refused)."""

    exit_code = 2


class BadRowError(BatchError):
    """A row that cannot be scored, with --on-bad-rows fail: names the file, the row and the column."""


class VersionRefusedError(BatchError):
    """The version failed the service's proof or signature check on the driver or on a worker."""

    exit_code = 1
