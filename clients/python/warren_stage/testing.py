"""Run a handler in a test, without warren or a broker:

    from warren_stage import testing

    def test_lookup():
        result = testing.run(lookup, {"company": "Acme"})
        assert result.done
        assert result.emitted == [{"company": "Acme", "website": "https://acme.example"}]

    def test_no_company_is_dead():
        assert testing.run(lookup, {}).dead

The message goes through the same code as in the real worker (the body is
encoded and decoded as JSON on the way in, the answers written as protocol
lines and read back), so a result here is what warren would see: `done`,
`retried` (with `reason` and `after`) or `dead`, and the bodies emitted as
JSON would carry them. A failure's traceback is printed on stderr, as in
the log.
"""

import asyncio
import inspect
import json

from .handling import handle, handle_async
from .worker import Worker

__all__ = ["run", "Result"]


class Result:
    """How a message ended: `outcome` ("done", "retry" or "dead"), with
    `done`, `retried`, `dead` as booleans; `reason` and `after` (seconds,
    or None) for retry and dead; `emits` as (output or None, body) pairs and
    `emitted` the bodies alone; `progress` as (fraction, note) pairs;
    `lines` the protocol lines as written."""

    def __init__(self, lines):
        self.lines = lines
        self.emits = []
        self.progress = []
        self.outcome = None
        self.reason = None
        self.after = None
        for line in lines:
            answer = json.loads(line)
            if "emit" in answer:
                self.emits.append((answer.get("to"), answer["emit"]))
            elif "progress" in answer:
                self.progress.append((answer["progress"], answer.get("note")))
            elif "done" in answer:
                self.outcome = "done"
            elif "retry" in answer:
                self.outcome, self.reason = "retry", answer["retry"]
                if "after" in answer:
                    self.after = int(answer["after"][:-2]) / 1000.0
            else:
                self.outcome, self.reason = "dead", answer["dead"]

    @property
    def emitted(self):
        return [body for _, body in self.emits]

    @property
    def done(self):
        return self.outcome == "done"

    @property
    def retried(self):
        return self.outcome == "retry"

    @property
    def dead(self):
        return self.outcome == "dead"

    def __repr__(self):
        extra = "" if self.done else ", reason=%r" % self.reason
        return "Result(%s%s, emits=%r)" % (self.outcome, extra, self.emits)


def run(handler, body, stage=None, attempt=1, id="test.0", job=None, deadline_ms=30000):
    """Handles one message `body` with `handler` (a function, plain or
    `async def`, or a `Worker` / the `warren_stage` module's worker, which
    picks the handler of `stage`) and returns its `Result`."""
    if isinstance(handler, Worker):
        if stage is None:
            raise TypeError("testing.run(worker, body) needs stage=NAME to pick the handler")
        handler = handler.handler_for(stage)
    message = json.loads(json.dumps({
        "id": id, "job": job if job is not None else id.split(".")[0], "stage": stage or "",
        "attempt": attempt, "deadline_ms": deadline_ms, "body": body,
    }))
    written = []
    out = written.append
    if inspect.iscoroutinefunction(handler):
        lines = asyncio.run(handle_async(handler, message, out, True))
    else:
        lines = handle(handler, message, out, True)
    written.append(lines)
    return Result([line for chunk in written for line in chunk.splitlines()])
