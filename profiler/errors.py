"""The one base class of errors whose message is meant for the user.

Every stage raises a subclass of :class:`PhprofError` for input it cannot use
(an unknown model, an unreadable file, a power log on another clock, a bad
option value), with a message that says what is wrong and what to do. The
commands print such a message as one ``Error:`` line; anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations


class PhprofError(Exception):
    """Input phprof cannot use; the message says why, in words for the user."""


class OptionError(PhprofError):
    """An option value phprof cannot use (the command line reports it as a usage error)."""


class PhprofWarning(UserWarning):
    """Something the user should know that does not stop the work (the commands
    print it as a ``note:`` line)."""
