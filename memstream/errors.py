"""One root for every error memstream raises on purpose.

`MemstreamError.user_fixable` tells a front end whether the caller can fix the problem (bad input,
unknown user: a 4xx, exit code 2) or not (database down, model missing: a 5xx, exit code 1), so the
server, CLI, MCP server and TUI map errors in one place and never report bad input as an outage.
The concrete classes keep their historical bases (ValueError, KeyError, RuntimeError) so code that
catches those keeps working.
"""

from __future__ import annotations


class MemstreamError(Exception):
    """Base of memstream's own errors; the message names the problem and, where there is one, the fix."""

    user_fixable: bool = False


class InvalidInputError(MemstreamError, ValueError):
    """The request itself is wrong (a field out of range, of the wrong type, too long, empty): fix it and retry."""

    user_fixable = True


class NotFoundError(MemstreamError, KeyError):
    """What was asked for does not exist (for this user)."""

    user_fixable = True

    def __str__(self) -> str:  # KeyError quotes its message; keep it plain
        return str(self.args[0]) if self.args else ""


class UnavailableError(MemstreamError, RuntimeError):
    """Something memstream depends on is not available (database, model): not the caller's fault."""

    user_fixable = False


class BusyError(UnavailableError):
    """Memory is working through a backlog and refused new work, having changed nothing: retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s
