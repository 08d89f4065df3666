"""The program side of an exec stage: a `Worker` holds the handlers (one
per stage, or one for all), reads the messages warren writes on stdin, runs
each through its handler (`handling`) and writes the answers on the
protocol's own descriptor. `print` and subprocesses write to stdout, which
is pointed at stderr (warren's log) first."""

import asyncio
import contextvars
import inspect
import json
import os
import queue
import sys
import threading
import types

from .handling import handle, handle_async
from .context import mark_cancelled

__all__ = ["Worker"]


class Worker:
    """Handlers by stage. `@worker.stage("lookup")` registers one;
    `worker.serve()` runs them until warren closes stdin."""

    def __init__(self):
        self._handlers = {}
        self.default = None

    def stage(self, name):
        """Decorator: `fn(body, ctx)` (plain or `async def`) handles the
        messages of stage `name`. Returns `fn` unchanged."""
        if not isinstance(name, str) or not name:
            raise TypeError("stage(name) takes the stage's name as in the pipeline file, not %r"
                            % (name,))

        def register(fn):
            if not callable(fn):
                raise TypeError("@stage(%r) decorates a function, not %r" % (name, fn))
            if name in self._handlers:
                raise ValueError("stage `%s` has two handlers: %s and %s"
                                 % (name, _name(self._handlers[name]), _name(fn)))
            self._handlers[name] = fn
            return fn

        return register

    def handler_for(self, stage):
        """The handler of `stage`, or None."""
        return self._handlers.get(stage, self.default)

    @property
    def stages(self):
        """The stages with a handler of their own."""
        return sorted(self._handlers)

    def serve(self, concurrency=None):
        """Serves messages until warren closes stdin, up to `concurrency`
        at once (default: `WARREN_CONCURRENCY`, the stage's setting): on
        threads when every handler is a plain function, as asyncio tasks
        (plain ones on threads beside) when one is `async def`."""
        if concurrency is None:
            concurrency = int(os.environ.get("WARREN_CONCURRENCY") or 1)
        handlers = list(self._handlers.values()) + ([self.default] if self.default else [])
        if not handlers:
            raise RuntimeError("no handler: register one with @warren_stage.stage(NAME) before serve()")
        serving = os.environ.get("WARREN_STAGE")
        if serving and self.handler_for(serving) is None:
            sys.stderr.write("warren_stage: this program has no handler for stage `%s` (it has: %s)\n"
                             % (serving, ", ".join(self.stages)))
        progress = "progress" in os.environ.get("WARREN_EXEC_FEATURES", "").split(",")
        out = Out(protocol_fd())
        if any(_is_async(h) for h in handlers):
            asyncio.run(self._serve_async(out, max(1, concurrency), progress))
        else:
            self._serve_threads(out, max(1, concurrency), progress)

    def _serve_threads(self, out, concurrency, progress):
        lines = sys.stdin.buffer
        if concurrency == 1:
            for line in lines:
                if not line.isspace():
                    message = decode(line)
                    if message is None:
                        continue
                    out(handle(self.handler_for(message.get("stage")), message, out, progress))
            return
        out = Coalescing(out)
        pool = Pool(concurrency, lambda m: out(handle(self.handler_for(m.get("stage")), m, out, progress)))
        try:
            for line in lines:
                if not line.isspace():
                    message = decode(line)
                    if message is not None:
                        pool.submit(message)
        finally:
            pool.close()

    async def _serve_async(self, out, concurrency, progress):
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        loop.set_default_executor(_executor(concurrency))
        batch = Batch(out, loop)
        routes = {}
        tasks = []  # strong references (the loop keeps weak ones), pruned now and then
        start = loop.create_task
        parts = []
        while True:
            # Whole chunks, split here: fewer turns of the loop than a
            # readline per message.
            chunk = await reader.read(1 << 18)
            if not chunk:
                break
            if b"\n" not in chunk:
                parts.append(chunk)
                continue
            if parts:
                parts.append(chunk)
                chunk = b"".join(parts)
                parts = []
            lines = chunk.split(b"\n")
            rest = lines.pop()
            if rest:
                parts.append(rest)
            for line in lines:
                if line and not line.isspace():
                    message = decode(line)
                    if message is None:
                        continue
                    stage = message.get("stage")
                    route = routes.get(stage)
                    if route is None:
                        handler = self.handler_for(stage)
                        route = routes[stage] = (handler, _is_async(handler))
                    task = _eager(self._one(route, message, out, batch, progress, loop), start)
                    if task is not None:
                        tasks.append(task)
            if len(tasks) > 2 * concurrency + 64:
                tasks = [task for task in tasks if not task.done()]
        if parts and not b"".join(parts).isspace():
            message = decode(b"".join(parts))
        else:
            message = None
        if message is not None:
            handler = self.handler_for(message.get("stage"))
            await self._one((handler, _is_async(handler)), message, out, batch, progress, loop)
        if tasks:
            await asyncio.gather(*tasks)
        batch.flush()

    @staticmethod
    async def _one(route, message, out, batch, progress, loop):
        handler, is_async = route
        if is_async:
            lines = await handle_async(handler, message, out, progress)
        else:
            lines = await loop.run_in_executor(None, handle, handler, message, out, progress)
        batch.add(lines)


def _eager(coroutine, start):
    """Runs `coroutine` now, up to its first real wait, in a context of its
    own (as a task would): one that finishes without waiting (a handler
    that computes and emits) costs no task, a third of its time. One that
    waits goes on as a task, in the same context, from where it stopped
    (returned). Before Python 3.11 (no task context to give), every
    coroutine is a task."""
    if not _TASK_CONTEXT:
        return start(coroutine)
    context = contextvars.copy_context()
    try:
        waiting_on = context.run(coroutine.send, None)
    except StopIteration:
        return None
    return start(_resumed(coroutine, waiting_on), context=context)


_TASK_CONTEXT = sys.version_info >= (3, 11)


async def _resumed(coroutine, waiting_on):
    return await _drive(coroutine, waiting_on)


@types.coroutine
def _drive(coroutine, waiting_on):
    """Drives a started `coroutine` on, handing its task what it waits on
    (first `waiting_on`, what it gave when it stopped)."""
    while True:
        try:
            sent = yield waiting_on
        except BaseException as error:  # thrown into the task: passed on
            try:
                waiting_on = coroutine.throw(error)
            except StopIteration as end:
                return end.value
        else:
            try:
                waiting_on = coroutine.send(sent)
            except StopIteration as end:
                return end.value


def decode(line):
    """One line from warren, decoded: a message, or None for a cancel line
    (`{"id": ..., "cancel": true}`, noted for that message's
    `ctx.cancelled()`). A line that is neither is a bug in warren or in
    what stands between: said, and the program stops."""
    try:
        # Decoded first: json.loads on bytes guesses their encoding (warren
        # writes UTF-8), a quarter of the decoding's time.
        message = json.loads(line.decode("utf-8"))
        if message.get("cancel") is True:
            mark_cancelled(message["id"])
            return None
        message["id"], message["body"]
        return message
    except (ValueError, TypeError, KeyError) as error:
        raise SystemExit("warren_stage: a line on stdin is not a warren message (%s): %.200r"
                         % (error, line))


def protocol_fd():
    """The descriptor the answers go to. warren reads them on the
    program's stdout: that descriptor is duplicated for the protocol, and
    stdout (1) is pointed at stderr, so that `print`, C extensions and
    subprocesses write to warren's log instead of into the protocol.
    `WARREN_PROTOCOL_FD`, when warren sets it, names a descriptor of its
    own for the answers, and stdout is left alone. Nothing may be written
    on stdout before serve(): warren reads it as the protocol."""
    given = os.environ.get("WARREN_PROTOCOL_FD")
    if given:
        return int(given)
    if sys.stdout is not None:
        sys.stdout.flush()
    earlier = _same_as_stdout()
    fd = os.dup(1)
    for other in earlier:
        os.dup2(2, other)
    if sys.stdout is not None and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    return fd


def _same_as_stdout():
    """Descriptor 1 and any other open on the same pipe (a duplicate made
    before serve(), by a library or a logging handler), on Linux."""
    fds = [1]
    try:
        target = os.readlink("/proc/self/fd/1")
        names = os.listdir("/proc/self/fd") if target.startswith("pipe:") else []
    except OSError:
        return fds
    for name in names:
        try:
            if int(name) > 2 and os.readlink("/proc/self/fd/" + name) == target:
                fds.append(int(name))
        except OSError:
            pass  # the listing's own descriptor, closed since
    return fds


class Out:
    """Writes answer lines on the protocol's descriptor, whole lines at a
    time from any thread."""

    def __init__(self, fd):
        self._fd = fd
        self._lock = threading.Lock()

    def __call__(self, text):
        data = text.encode("utf-8")
        with self._lock:
            written = os.write(self._fd, data)
            if written < len(data):
                view = memoryview(data)
                while written < len(data):
                    written += os.write(self._fd, view[written:])


class Batch:
    """Answers finished in one turn of the event loop, written in one go
    at its end (fewer system calls when many messages finish together)."""

    def __init__(self, out, loop):
        self._out = out
        self._loop = loop
        self._lines = []

    def add(self, lines):
        if not self._lines:
            self._loop.call_soon(self.flush)
        self._lines.append(lines)

    def flush(self):
        if self._lines:
            text = "".join(self._lines)
            self._lines = []
            self._out(text)


class Coalescing:
    """Answers from several threads: a thread that finds another writing
    leaves its lines to it, so that what finishes together goes out in one
    system call."""

    def __init__(self, out):
        self._out = out
        self._lock = threading.Lock()
        self._lines = []
        self._writing = False

    def __call__(self, text):
        with self._lock:
            self._lines.append(text)
            if self._writing:
                return
            self._writing = True
        while True:
            with self._lock:
                if not self._lines:
                    self._writing = False
                    return
                text = "".join(self._lines)
                self._lines = []
            self._out(text)


class Pool:
    """`size` threads at most, started as needed, each running `work` on
    the items submitted (a SimpleQueue: less per item than an executor's
    futures). One thread reads, the others handle: a BufferedReader's
    readline is not safe from several threads at once."""

    def __init__(self, size, work):
        self._size = size
        self._work = work
        self._queue = queue.SimpleQueue()
        self._threads = []
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, item):
        with self._lock:
            spare = self._idle > 0
            if spare:
                self._idle -= 1
        if not spare and len(self._threads) < self._size:
            thread = threading.Thread(target=self._run, name="warren-stage-%d" % len(self._threads))
            self._threads.append(thread)
            thread.start()
        self._queue.put(item)

    def _run(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._work(item)
            with self._lock:
                self._idle += 1

    def close(self):
        """Lets the threads finish what they hold, then stops them."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()


def _executor(concurrency):
    import concurrent.futures

    return concurrent.futures.ThreadPoolExecutor(max_workers=concurrency,
                                                 thread_name_prefix="warren-stage")


def _is_async(fn):
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def _name(fn):
    return getattr(fn, "__qualname__", repr(fn))
