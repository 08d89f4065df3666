"""What a handler raises to say how its message ended, and the errors the
helper raises when a handler uses it wrongly (each says what and where)."""

import datetime
import numbers


class Dead(Exception):
    """The message can never succeed: it goes to the dead-letter queue with
    this reason (`raise Dead("no company name")`)."""

    def __init__(self, reason=""):
        super().__init__(reason)
        self.reason = str(reason) or "dead (the handler gave no reason)"


class Retry(Exception):
    """Try the message again later: after at least `after` seconds (a number
    or a `datetime.timedelta`) when given, else after the stage's backoff."""

    def __init__(self, reason="", after=None):
        super().__init__(reason)
        self.reason = str(reason) or "retry (the handler gave no reason)"
        self.after = seconds(after, "Retry(after=...)") if after is not None else None


class StageError(Exception):
    """A handler used the helper wrongly; the message says what and where."""


class NotJSON(StageError, TypeError):
    """A body to emit (or a returned value) cannot be written as JSON."""


class Finished(StageError):
    """`emit` or `progress` on a message whose handler already returned."""


class NoHandler(StageError):
    """The program has no handler for the message's stage."""


def seconds(value, what):
    """`value` (a number or a timedelta) as seconds >= 0, or a ValueError
    naming `what`."""
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value or value < 0:
        raise ValueError("%s takes seconds as a number >= 0 or a timedelta, not %r" % (what, value))
    return float(value)
