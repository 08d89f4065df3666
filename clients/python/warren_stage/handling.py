"""One message through its handler: the context, the call, what it
returned or raised, and the lines that say so (its emits, then exactly one
`done`, `retry` or `dead`). The real worker and `warren_stage.testing`
both go through here, so a test sees what warren would."""

import asyncio
import inspect
import sys

from . import protocol
from .context import Context, Emit, forget_cancelled
from .errors import NoHandler, StageError


def handle(handler, message, out, progress):
    """Runs a plain handler on `message` (decoded); returns the lines."""
    ctx = Context(message, out, progress)
    try:
        if handler is None:
            raise NoHandler("this program has no handler for stage `%s`" % ctx.stage)
        result = handler(message["body"], ctx)
        if inspect.isawaitable(result):
            result = asyncio.run(_wait(result))
        if result is not None:
            returned(ctx, result)
        error = None
    except Exception as caught:  # any failure is the message's
        error = caught
    except SystemExit as caught:
        error = StageError("the handler called sys.exit(%r); raise an exception to fail a message"
                           % (caught.code,))
    return finish(ctx, error)


async def handle_async(handler, message, out, progress):
    """Runs an `async def` handler on `message`; returns the lines."""
    ctx = Context(message, out, progress)
    try:
        result = await handler(message["body"], ctx)
        if result is not None:
            returned(ctx, result)
        error = None
    except Exception as caught:
        error = caught
    except SystemExit as caught:
        error = StageError("the handler called sys.exit(%r); raise an exception to fail a message"
                           % (caught.code,))
    return finish(ctx, error)


async def _wait(awaitable):
    return await awaitable


def returned(ctx, result):
    """Emits what a handler returned: a list, tuple or generator emits each
    item, anything else is one body; an `Emit` names its output."""
    if isinstance(result, (list, tuple)) or inspect.isgenerator(result):
        for item in result:
            _emit_returned(ctx, item)
    else:
        _emit_returned(ctx, result)


def _emit_returned(ctx, item):
    if isinstance(item, Emit):
        ctx.emit(item.body, to=item.to, _what="the body of an Emit returned by the handler")
    else:
        ctx.emit(item, _what="the value returned by the handler")


def finish(ctx, error):
    """The message's lines: its emits and `done`, or, when the handler
    failed, only the failure (its emits are dropped: the retry makes them
    again, with the same ids). A failure other than Dead and Retry is
    logged with its traceback."""
    ctx._finished = True
    forget_cancelled(ctx.id)
    if error is None:
        ctx._lines.append(protocol.done_line(ctx._id_json))
        return "".join(ctx._lines)
    if not isinstance(error, (protocol.Dead, protocol.Retry)):
        sys.stderr.write(protocol.log_failure(error, ctx.id, ctx.stage, ctx.attempt))
        sys.stderr.flush()
    return protocol.failure_line(ctx._id_json, error, ctx.stage)
