"""warren_stage.testing: a handler run in a test, without warren or a
broker, ends as it would in the real worker (the last test compares the
two on the same program)."""

import asyncio
import importlib.util
import sys
import unittest

from warren_stage import Dead, Emit, Finished, Retry, Worker, testing
from harness import Pipeline


def lookup(body, ctx):
    if "company" not in body:
        raise Dead("no company name")
    if body.get("busy"):
        raise Retry("directory busy", after=30)
    ctx.progress(0.5, "looked up")
    return {"company": body["company"], "attempt": ctx.attempt, "job": ctx.job}


class Testing(unittest.TestCase):
    def test_done_with_what_was_returned_and_emitted(self):
        result = testing.run(lookup, {"company": "Acme"}, id="c7.2", attempt=2)
        self.assertTrue(result.done, result)
        self.assertEqual(result.emitted, [{"company": "Acme", "attempt": 2, "job": "c7"}])
        self.assertEqual(result.progress, [(0.5, "looked up")])

    def test_dead_and_retry_with_their_reasons(self):
        dead = testing.run(lookup, {})
        self.assertTrue(dead.dead)
        self.assertEqual(dead.reason, "no company name")
        busy = testing.run(lookup, {"company": "Acme", "busy": True})
        self.assertTrue(busy.retried)
        self.assertEqual((busy.reason, busy.after), ("directory busy", 30.0))

    def test_an_error_retries_and_drops_what_was_emitted(self):
        def handler(body, ctx):
            ctx.emit({"first": 1})
            raise ValueError("bad row")
        result = testing.run(handler, {}, stage="rows")
        self.assertTrue(result.retried)
        self.assertEqual(result.emitted, [])
        self.assertIn("ValueError: bad row (in the handler of stage `rows` at test_testing.py:", result.reason)

    def test_lists_generators_and_emit_to(self):
        def handler(body, ctx):
            return (Emit(n, to="odd") if n % 2 else {"n": n} for n in range(4))
        result = testing.run(handler, {})
        self.assertEqual(result.emits, [(None, {"n": 0}), ("odd", 1), (None, {"n": 2}), ("odd", 3)])
        self.assertEqual(testing.run(lambda b, c: [], {}).emits, [])
        self.assertEqual(testing.run(lambda b, c: [[1, 2]], {}).emitted, [[1, 2]])

    def test_an_async_handler_and_a_worker_by_stage(self):
        worker = Worker()

        @worker.stage("double")
        async def double(body, ctx):
            await asyncio.sleep(0)
            return body["n"] * 2

        self.assertEqual(testing.run(worker, {"n": 4}, stage="double").emitted, [8])
        missing = testing.run(worker, {"n": 4}, stage="triple")
        self.assertTrue(missing.retried)
        self.assertIn("no handler for stage `triple`", missing.reason)
        with self.assertRaises(ValueError):
            worker.stage("double")(double)

    def test_mistakes_are_named(self):
        self.assertIn("is not JSON", testing.run(lambda b, c: float("nan"), {}).reason)
        self.assertIn("Retry(after=...) takes seconds", testing.run(
            lambda b, c: (_ for _ in ()).throw(Retry("x", after="soon")), {}).reason)
        kept = []
        testing.run(lambda b, c: kept.append(c), {})
        with self.assertRaises(Finished):
            kept[0].emit({"late": True})
        self.assertIn("sys.exit(3)", testing.run(lambda b, c: sys.exit(3), {}).reason)


PROGRAM = """
from warren_stage import Dead, Emit, Retry, Worker
worker = Worker()

@worker.stage("py")
def handle(body, ctx):
    n = body["n"]
    if n < 0:
        raise Dead("negative: %d" % n)
    if n == 0:
        raise Retry("zero")
    if n == 7:
        return {"seven": {1, 2}}
    return [{"n": n, "half": n / 2}, Emit({"n": n, "unicode": "h\\u00e9 \\u2603"}, to="other")]

if __name__ == "__main__":
    worker.serve()
"""


class SameAsTheWorker(unittest.TestCase):
    def test_testing_run_ends_messages_as_the_worker_does(self):
        p = Pipeline(PROGRAM, settings="retry: { attempts: 2, backoff: [100ms] }")
        self.addCleanup(p.close)
        inputs = [{"n": 1}, {"n": 4}, {"n": -2}, {"n": 0}, {"n": 7}]
        code, said = p.run(inputs)
        self.assertEqual(code, 1, said)
        spec = importlib.util.spec_from_file_location("program_under_test", p.path("stage.py"))
        program = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(program)
        results = [testing.run(program.worker, body, stage="py") for body in inputs]

        def key(record):
            return record["n"]

        self.assertEqual(sorted([b for r in results for to, b in r.emits if to is None], key=key),
                         sorted(p.results(), key=key))
        self.assertEqual(sorted([b for r in results for b in r.emitted], key=key),
                         sorted(p.results("other.jsonl"), key=key))
        dead = p.dead()
        for result in results:
            if not result.done:
                self.assertIn(result.reason, dead)
        self.assertEqual([r.outcome for r in results], ["done", "done", "dead", "retry", "retry"])


if __name__ == "__main__":
    unittest.main()
