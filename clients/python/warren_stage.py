"""A warren `exec` stage in Python: a handler is one function.

    import warren_stage

    def lookup(body, ctx):
        if not body.get("company"):
            raise warren_stage.Dead("no company name")   # dead-letter it
        ctx.emit({"company": body["company"], "website": find(body["company"])})
        # returning is "done"; any other exception retries it

    warren_stage.run(lookup)

warren starts the program and writes one JSON line per message on its
stdin; this module reads them, calls the handler, and writes the answers
(`emit`, `done`, `retry`, `dead`) on stdout, as DESIGN.md's *exec stages*
says. Messages are handled `WARREN_CONCURRENCY` at a time (the stage's
`concurrency`): on threads for a plain function, as tasks for an `async def`
one. Whatever the handler prints goes to stderr, which warren logs; stdout
belongs to the protocol. When warren closes stdin (the worker drains), the
messages in hand are finished and the program exits 0.

One file, the standard library only, Python 3.8 or later.
"""

import asyncio
import concurrent.futures
import inspect
import json
import os
import sys
import threading
import time
import traceback

__all__ = ["run", "Context", "Dead", "Retry"]


class Dead(Exception):
    """The message can never succeed: it goes to the dead-letter queue with
    this reason."""


class Retry(Exception):
    """Try the message again later, after at least `after` seconds (a number)
    when given, else after the stage's backoff."""

    def __init__(self, reason, after=None):
        super().__init__(reason)
        self.after = after


class Context:
    """What a handler gets besides the message body."""

    def __init__(self, message, out):
        self.id = message["id"]
        self.job = message.get("job", self.id)
        self.stage = message.get("stage", "")
        self.attempt = message.get("attempt", 1)
        self.deadline = time.monotonic() + message.get("deadline_ms", 0) / 1000.0
        self._out = out

    def emit(self, body, to=None):
        """Emits `body` to every output of the stage, or to the output `to`.
        It is published (and confirmed) before the message is acknowledged."""
        answer = {"id": self.id, "emit": body}
        if to is not None:
            answer["to"] = to
        self._out.write(answer)

    def emit_to(self, to, body):
        """Emits `body` to one output of the stage."""
        self.emit(body, to=to)

    def seconds_left(self):
        """Time before warren gives up on this message."""
        return max(0.0, self.deadline - time.monotonic())


class _Out:
    """The protocol's stdout: one answer per line, lines never mixed."""

    def __init__(self, stream):
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, answer):
        line = json.dumps(answer, separators=(",", ":"), ensure_ascii=False)
        data = (line + "\n").encode("utf-8")
        with self._lock:
            self._stream.write(data)
            self._stream.flush()


def _ending(message_id, error):
    """The last answer about a message, from how its handler ended."""
    if error is None:
        return {"id": message_id, "done": True}
    if isinstance(error, Dead):
        return {"id": message_id, "dead": str(error) or "dead"}
    if isinstance(error, Retry):
        answer = {"id": message_id, "retry": str(error) or "retry"}
        if error.after is not None:
            answer["after"] = "%dms" % max(0, int(float(error.after) * 1000))
        return answer
    traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    return {"id": message_id, "retry": "%s: %s" % (type(error).__name__, error)}


def _handle(handler, message, out):
    ctx = Context(message, out)
    try:
        handler(message["body"], ctx)
        error = None
    except Exception as caught:  # any failure is the message's
        error = caught
    out.write(_ending(ctx.id, error))


async def _handle_async(handler, message, out, slots):
    async with slots:
        ctx = Context(message, out)
        try:
            await handler(message["body"], ctx)
            error = None
        except Exception as caught:
            error = caught
        out.write(_ending(ctx.id, error))


def run(handler, concurrency=None):
    """Serves `handler(body, ctx)` until warren closes stdin. `body` is the
    message (decoded JSON); see `Context` for `ctx`."""
    concurrency = concurrency or int(os.environ.get("WARREN_CONCURRENCY", "1") or 1)
    out = _Out(sys.stdout.buffer)
    # print() in a handler must not break the protocol: it goes to stderr.
    sys.stdout = sys.stderr
    if inspect.iscoroutinefunction(handler):
        asyncio.run(_serve_async(handler, out, concurrency))
    else:
        _serve_threads(handler, out, concurrency)


def _messages():
    for line in sys.stdin.buffer:
        if line.strip():
            yield json.loads(line)


def _serve_threads(handler, out, concurrency):
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        for message in _messages():
            pool.submit(_handle, handler, message, out)


async def _serve_async(handler, out, concurrency):
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    slots = asyncio.Semaphore(concurrency)
    tasks = set()
    while True:
        line = await reader.readline()
        if not line:
            break
        if not line.strip():
            continue
        task = asyncio.ensure_future(_handle_async(handler, json.loads(line), out, slots))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
