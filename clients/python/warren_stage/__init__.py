"""warren exec stages in Python: a handler is one function.

    from warren_stage import stage, serve, Dead, Retry

    @stage("lookup")
    def lookup(body, ctx):
        if not body.get("company"):
            raise Dead("no company name")                # dead-letter it
        if directory_busy():
            raise Retry("directory busy", after=30)      # again in 30 s or later
        return {"company": body["company"], "website": find(body["company"])}
        # returned: emitted to every output (a list: each item); None: nothing

    @stage("grade")
    async def grade(body, ctx):                          # several stages, one program
        ...

    serve()

warren runs the program and writes one JSON line per message on its stdin
(DESIGN.md, *exec stages*); `serve` calls the handler of the message's
stage and answers on the protocol's own descriptor: stdout is pointed at
stderr first, so `print` and subprocesses go to warren's log. Messages are
handled `WARREN_CONCURRENCY` at a time (the stage's `concurrency`): on
threads, or as asyncio tasks when a handler is `async def`. When warren
closes stdin (the worker drains), the messages in hand are finished and
`serve` returns.

`warren_stage.run(handler)` serves one handler for every stage (the first
API, kept). `warren_stage.testing.run(handler, body)` runs a handler
without warren or a broker, with the result warren would see;
`warren_stage.client.Client` sends jobs to `warren serve`.

Standard library only, Python 3.8 or later.
"""

from .context import Context, Emit
from .errors import Dead, Finished, NoHandler, NotJSON, Retry, StageError
from .worker import Worker

__all__ = ["stage", "serve", "run", "Worker", "Context", "Emit", "Dead", "Retry",
           "StageError", "NotJSON", "Finished", "NoHandler"]
__version__ = "0.2.0"

#: The worker that `stage` and `serve` use.
worker = Worker()


def stage(name):
    """Decorator: the function handles the messages of stage `name`
    (`fn(body, ctx)`, plain or `async def`)."""
    return worker.stage(name)


def serve(concurrency=None):
    """Serves the stages registered with `@stage` until warren closes
    stdin."""
    worker.serve(concurrency)


def run(handler, concurrency=None):
    """Serves `handler(body, ctx)` for every stage until warren closes
    stdin."""
    one = Worker()
    one.default = handler
    one.serve(concurrency)
