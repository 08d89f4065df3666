"""What a handler gets besides the message body: the message's id, job,
stage, attempt and deadline, and `emit` / `progress`."""

import sys
import threading
import time

from . import protocol
from .errors import Finished, seconds


# Ids of the messages whose job warren said is cancelled (a cancel line on
# stdin), until their handling ends.
_cancelled = set()
_cancelled_lock = threading.Lock()


def mark_cancelled(message_id):
    """Notes a cancel line from warren: the handler of `message_id` sees
    `ctx.cancelled()` from now on."""
    with _cancelled_lock:
        _cancelled.add(message_id)


def forget_cancelled(message_id):
    if not _cancelled:  # the usual case, without the lock
        return
    with _cancelled_lock:
        _cancelled.discard(message_id)


class Emit:
    """A body to emit to one output, as a handler's return value (or an
    item of a returned list): `return Emit(body, to="grade")`."""

    __slots__ = ("body", "to")

    def __init__(self, body, to=None):
        self.body = body
        self.to = to


class Context:
    """The message's `id`, `job`, `stage`, `attempt` (1 on first delivery),
    `deadline` (a `time.monotonic()` value: warren gives up on the message
    then and restarts the program) and `deadline_ms` (as given), with
    `emit`, `emit_to`, `progress`, `cancelled()` and `seconds_left()`."""

    __slots__ = ("id", "job", "stage", "attempt", "deadline_ms", "deadline",
                 "_id_json", "_lines", "_out", "_progress", "_finished")

    def __init__(self, message, out, progress_lines):
        self.id = message["id"]
        self.job = message.get("job", self.id)
        self.stage = message.get("stage", "")
        self.attempt = message.get("attempt", 1)
        self.deadline_ms = message.get("deadline_ms", 0)
        self.deadline = time.monotonic() + self.deadline_ms / 1000.0
        self._id_json = protocol.quote(self.id)
        self._lines = []
        self._out = out
        self._progress = progress_lines
        self._finished = False

    def emit(self, body, to=None, _what="the body emitted"):
        """Emits `body` to every output of the stage, or to the output `to`.
        It is published (and confirmed) before the message is acknowledged,
        with id `{id}.{n}` in emit order."""
        if self._finished:
            raise Finished("emit on message %s after its handler returned: emit before returning"
                           % self.id)
        text = protocol.body_json(body, _what)
        self._lines.append(protocol.emit_line(self._id_json, text, to))

    def emit_to(self, to, body):
        """Emits `body` to the output `to` only."""
        self.emit(body, to=to)

    def progress(self, fraction, note=None):
        """Reports how far the handler is (0.0 to 1.0), with an optional note
        ("page 4 of 10"); shown with the job."""
        if self._finished:
            raise Finished("progress on message %s after its handler returned" % self.id)
        fraction = seconds(fraction, "progress(fraction)")
        if fraction > 1:
            raise ValueError("progress(fraction) is between 0.0 and 1.0, not %r" % fraction)
        note = None if note is None else str(note)
        if self._progress:
            self._out(protocol.progress_line(self._id_json, fraction, note))
        else:
            # warren does not read progress lines yet: the log shows them.
            sys.stderr.write("warren_stage: progress of %s: %d%%%s\n"
                             % (self.id, round(fraction * 100), " " + note if note else ""))

    def cancelled(self):
        """True once the message's job was cancelled (`warren job --cancel`,
        `DELETE /v1/jobs/{id}`): the handler may stop early; whatever it
        returns or raises then, nothing is retried or dead-lettered. (Seen
        while other messages are read: with a concurrency of 1 on threads,
        only from the next message on.)"""
        with _cancelled_lock:
            return self.id in _cancelled

    def seconds_left(self):
        """Seconds before warren gives up on this message."""
        return max(0.0, self.deadline - time.monotonic())

    def __repr__(self):
        return "Context(id=%r, job=%r, stage=%r, attempt=%r)" % (
            self.id, self.job, self.stage, self.attempt)
