"""warren_stage's worker against the real warren binary and broker: each
test runs a pipeline whose exec stages are handlers written with the
helper (`warren run`), and reads what reached the sinks and the dead-letter
queues. The helper is the one installed in this interpreter (tests/clients.rs
installs the package into a fresh venv), not the source tree."""

import os
import unittest

import warren_stage
from harness import Pipeline


class Worker(unittest.TestCase):
    def pipeline(self, program, stages=None, settings=""):
        pipeline = Pipeline(program, stages, settings)
        self.addCleanup(pipeline.close)
        return pipeline

    def test_a_cancel_line_marks_its_message_and_is_not_a_message(self):
        import importlib
        worker = importlib.import_module("warren_stage.worker")
        from warren_stage.context import Context
        from warren_stage.handling import finish
        self.assertIsNone(worker.decode(b'{"id": "c.1", "cancel": true}\n'))
        ctx = Context({"id": "c.1", "body": {}}, lambda line: None, True)
        other = Context({"id": "c.2", "body": {}}, lambda line: None, True)
        self.assertTrue(ctx.cancelled())
        self.assertFalse(other.cancelled())
        finish(ctx, None)
        self.assertFalse(ctx.cancelled(), "forgotten once its handling ended")

    def test_a_handler_that_never_waits_costs_no_task_and_one_that_waits_goes_on(self):
        import asyncio
        import importlib
        worker = importlib.import_module("warren_stage.worker")

        async def main():
            loop = asyncio.get_running_loop()
            tasks = []

            def start(coroutine, **context):
                tasks.append(loop.create_task(coroutine, **context))
                return tasks[-1]

            ran = []

            async def quick():
                ran.append("quick")

            self.assertIsNone(worker._eager(quick(), start))
            self.assertEqual((ran, tasks), (["quick"], []), "run at once, without a task")

            given = loop.create_future()

            async def waits():
                ran.append(await given)
                await asyncio.sleep(0)
                raise ValueError("after the wait")

            task = worker._eager(waits(), start)
            self.assertEqual(len(tasks), 1)
            loop.call_soon(given.set_result, "given")
            with self.assertRaises(ValueError):
                await task
            self.assertEqual(ran, ["quick", "given"])

            stopped = []

            async def cancelled():
                try:
                    await loop.create_future()
                except asyncio.CancelledError:
                    stopped.append("cancelled")
                    raise

            # Each handler in a context of its own, as in a task.
            import contextvars
            var = contextvars.ContextVar("var", default="unset")

            async def sets():
                var.set("set by a handler")

            self.assertIsNone(worker._eager(sets(), start))
            self.assertEqual(var.get(), "unset", "a handler's context var stays its own")

            task = worker._eager(cancelled(), start)
            await asyncio.sleep(0)
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            self.assertEqual(stopped, ["cancelled"], "the cancel reached the handler")

        asyncio.run(main())

    def test_the_package_is_the_installed_one(self):
        here = os.path.dirname(os.path.abspath(__file__))
        self.assertFalse(warren_stage.__file__.startswith(os.path.dirname(here)),
                         "imported from the source tree: %s" % warren_stage.__file__)

    def test_run_a_function_emits_finishes_dead_letters_and_retries(self):
        p = self.pipeline("""
            import warren_stage
            def handle(body, ctx):
                print("this goes to the log, not the protocol")
                if body.get("dead"):
                    raise warren_stage.Dead("no such company")
                if body.get("flaky") and ctx.attempt == 1:
                    raise RuntimeError("first try fails")
                if body.get("later") and ctx.attempt == 1:
                    raise warren_stage.Retry("come back", after=0.5)
                ctx.emit({"n": body["n"], "attempt": ctx.attempt, "job": ctx.job})
                if body.get("other"):
                    ctx.emit_to("other", {"n": body["n"]})
            warren_stage.run(handle)
            """)
        code, said = p.run([{"n": 1}, {"n": 2, "flaky": True}, {"n": 3, "later": True},
                            {"n": 4, "dead": True}, {"n": 5, "other": True}])
        self.assertEqual(code, 1, said)  # one dead letter
        results = sorted(p.results(), key=lambda r: r["n"])
        self.assertEqual([r["n"] for r in results], [1, 2, 3, 5], said)
        self.assertEqual([r["attempt"] for r in results], [1, 2, 2, 1])
        self.assertTrue(all(r["job"] for r in results))
        # emit without a target goes to every output; emit_to to one.
        other = p.results("other.jsonl")
        self.assertEqual(sorted(r["n"] for r in other), [1, 2, 3, 5, 5], said)
        self.assertIn({"n": 5}, other)
        dead = p.dead()
        self.assertIn("1 dead letters", dead)
        self.assertIn("no such company", dead)

    def test_an_async_handler_runs_messages_concurrently(self):
        p = self.pipeline("""
            import asyncio, time, warren_stage
            running = [0, 0]   # now, most at once
            async def handle(body, ctx):
                running[0] += 1
                running[1] = max(running)
                await asyncio.sleep(0.5)
                running[0] -= 1
                ctx.emit({"n": body["n"], "left": ctx.seconds_left() > 0, "most": running[1]})
            warren_stage.run(handle)
            """, settings="concurrency: 8")
        code, said = p.run([{"n": n} for n in range(16)])
        self.assertEqual(code, 0, said)
        results = p.results()
        self.assertEqual(sorted(r["n"] for r in results), list(range(16)), said)
        self.assertTrue(all(r["left"] for r in results))
        self.assertGreater(max(r["most"] for r in results), 1, results)

    def test_several_stages_in_one_program_with_returned_values(self):
        # One program serves `split` (a plain function returning a list:
        # several emits) and `square` (async, returning one body, or an
        # Emit naming an output), dispatched on each message's stage.
        p = self.pipeline("""
            import threading
            from warren_stage import stage, serve, Emit
            most = set()
            @stage("split")
            def split(body, ctx):
                most.add(threading.current_thread().name)
                return [{"n": n, "stage": ctx.stage} for n in body["numbers"]]
            @stage("square")
            async def square(body, ctx):
                if body["n"] == 0:
                    return Emit({"zero": True, "job": ctx.job}, to="zeros")
                return {"n": body["n"], "square": body["n"] ** 2, "from": body["stage"]}
            serve()
            """, stages="""
            split:
              exec: {program}
              concurrency: 4
              outputs: [square]
            square:
              exec: {program}
              concurrency: 4
              outputs: [out, zeros]
            out:
              sink: { path: {dir}/out.jsonl }
            zeros:
              sink: { path: {dir}/zeros.jsonl }
            """)
        code, said = p.run([{"numbers": [0, 1, 2]}, {"numbers": [3]}])
        self.assertEqual(code, 0, said)
        squares = sorted(p.results(), key=lambda r: r["n"])
        self.assertEqual([(r["n"], r["square"], r["from"]) for r in squares],
                         [(1, 1, "split"), (2, 4, "split"), (3, 9, "split")], said)
        # A body without `to` goes to every output, an Emit to its own.
        zeros = [r for r in p.results("zeros.jsonl") if "zero" in r]
        self.assertEqual(len(zeros), 1, said)
        self.assertTrue(zeros[0]["job"], zeros)
        self.assertEqual(len(p.results("zeros.jsonl")), 4, said)

    def test_print_and_subprocesses_go_to_the_log_not_the_protocol(self):
        # Anything written on descriptor 1 (print, sys.stdout, os.write,
        # a subprocess such as `ls`) would break the protocol; the helper
        # moved the protocol to a descriptor of its own.
        p = self.pipeline("""
            import os, subprocess, sys, time, warren_stage
            early = os.fdopen(os.dup(1), "w", buffering=1)  # a duplicate of stdout made before serve()
            def handle(body, ctx):
                early.write("early-%d\\n" % body["n"])
                print("printed-%d" % body["n"])
                sys.stdout.write("written-%d\\n" % body["n"])
                os.write(1, b"fd1-%d\\n" % body["n"])
                subprocess.run(["ls", os.path.dirname(os.path.abspath(__file__))], check=True)
                os.system("echo system-%d" % body["n"])
                ctx.progress(0.5, "half way")
                return {"n": body["n"], "id": ctx.id, "job": ctx.job, "stage": ctx.stage,
                        "attempt": ctx.attempt, "deadline_ms": ctx.deadline_ms,
                        "ahead": 0 < ctx.deadline - time.monotonic() <= ctx.deadline_ms / 1000}
            warren_stage.run(handle)
            """, settings="timeout: 20s")
        open(p.path("listed-by-ls.txt"), "w").close()
        code, said = p.run([{"n": n} for n in range(3)])
        self.assertEqual(code, 0, said)
        self.assertEqual(sorted(r["n"] for r in p.results()), [0, 1, 2], said)
        for text in ["listed-by-ls.txt", "early-2", "printed-2", "written-2", "fd1-2", "system-2"]:
            self.assertIn(text, said)
        self.assertNotIn("not the protocol", said)
        # The context: the message's id, job, stage, attempt and deadline.
        for result in p.results():
            self.assertEqual((result["stage"], result["attempt"]), ("py", 1))
            self.assertTrue(result["id"] and result["job"], result)
            self.assertTrue(0 < result["deadline_ms"] <= 20000 and result["ahead"], result)
        # warren reads progress lines (WARREN_EXEC_FEATURES says so): the
        # report went on the protocol, taken (every message done), not to
        # the log.
        self.assertNotIn("50% half way", said)

    def test_a_handler_mistake_is_said_with_its_traceback(self):
        # A returned value that is not JSON, an exception: each retried
        # with a reason that says what and where (then dead-lettered), the
        # traceback in the log; never a protocol error that kills the
        # program.
        p = self.pipeline("""
            import warren_stage
            def handle(body, ctx):
                if body["kind"] == "set":
                    return {"a set", "is not JSON"}
                return {"n": 1}["missing"]
            warren_stage.run(handle)
            """)
        code, said = p.run([{"kind": "set"}, {"kind": "key"}])
        self.assertEqual(code, 1, said)
        dead = p.dead()
        self.assertIn("2 dead letters", dead)
        self.assertIn("the value returned by the handler (set) is not JSON", dead)
        self.assertIn("KeyError: 'missing' (in the handler of stage `py` at stage.py:", dead)
        self.assertIn("Traceback (most recent call last)", said)
        self.assertNotIn("killed", said)


if __name__ == "__main__":
    unittest.main()
