"""The one exception type users see for bad input."""

from __future__ import annotations


class TextMatchError(ValueError):
    """Bad input or bad usage: the message names the problem and the fix.

    The command line turns it into a one-line message on stderr and exit status 2.
    """
