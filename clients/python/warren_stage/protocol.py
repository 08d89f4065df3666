"""The exec protocol's lines (DESIGN.md, *exec stages*), pure: what a
program writes about a message, from what its handler did."""

import json
import json.encoder
import traceback

from .errors import Dead, NotJSON, Retry


def _not_json(value):
    raise TypeError("Object of type %s is not JSON serializable" % type(value).__name__)


def _encoder():
    """Compact JSON (no NaN, UTF-8 kept), with the C encoder made once:
    json.dumps with options builds a new encoder per call, and
    JSONEncoder.encode a new C encoder per call (a third of a message's
    protocol time)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
    # markers None: no check for circular structures (one is a RecursionError).
    chunks = make(None, _not_json, json.encoder.encode_basestring, None, ":", ",", False, False, False)
    return lambda value: "".join(chunks(value, 0))


_encode = _encoder()

#: A string as JSON.
quote = json.encoder.encode_basestring


def body_json(body, what):
    """`body` as compact JSON text, or NotJSON saying what could not be
    written (`what` names where it came from)."""
    try:
        return _encode(body)
    except (TypeError, ValueError, RecursionError) as error:
        raise NotJSON("%s (%s) is not JSON: %s" % (what, type(body).__name__, error)) from None


def emit_line(id_json, body_text, to=None):
    """An `emit` answer; `id_json` and `body_text` are JSON already."""
    if to is None:
        return '{"id":%s,"emit":%s}\n' % (id_json, body_text)
    return '{"id":%s,"emit":%s,"to":%s}\n' % (id_json, body_text, _encode(to))


def done_line(id_json):
    return '{"id":%s,"done":true}\n' % id_json


def progress_line(id_json, fraction, note):
    if note is None:
        return '{"id":%s,"progress":%s}\n' % (id_json, _encode(fraction))
    return '{"id":%s,"progress":%s,"note":%s}\n' % (id_json, _encode(fraction), _encode(note))


def failure_line(id_json, error, stage):
    """The last answer about a message whose handler raised `error`: `dead`
    for Dead, `retry` (with `after`) for Retry, and for anything else a
    `retry` whose reason names the error and where the handler raised it."""
    if isinstance(error, Dead):
        return '{"id":%s,"dead":%s}\n' % (id_json, _encode(error.reason))
    if isinstance(error, Retry):
        if error.after is None:
            return '{"id":%s,"retry":%s}\n' % (id_json, _encode(error.reason))
        return '{"id":%s,"retry":%s,"after":"%dms"}\n' % (
            id_json, _encode(error.reason), int(error.after * 1000))
    return '{"id":%s,"retry":%s}\n' % (id_json, _encode(describe(error, stage)))


def describe(error, stage):
    """One line about an error a handler raised: its type, its message, and
    the place in the user's code it came from."""
    text = "%s: %s" % (type(error).__name__, error) if str(error) else type(error).__name__
    frames = traceback.extract_tb(error.__traceback__)
    user = [f for f in frames if "/warren_stage/" not in f.filename.replace("\\", "/")]
    place = " at %s:%d" % (user[-1].filename.rsplit("/", 1)[-1], user[-1].lineno) if user else ""
    return "%s (in the handler%s%s)" % (text, " of stage `%s`" % stage if stage else "", place)


def log_failure(error, message_id, stage, attempt):
    """What goes to the log when a handler raised something other than Dead
    or Retry: a header line naming the message, then the traceback, as one
    text (written at once, so that concurrent handlers do not mix lines)."""
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    return "warren_stage: the handler of stage `%s` failed on message %s (attempt %d):\n%s" % (
        stage, message_id, attempt, "".join(lines))
