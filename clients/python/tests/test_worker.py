"""Tests of warren_stage against the real warren binary and broker: each one
runs a pipeline whose exec stage is a handler written with the helper, with
`warren run`, and reads what reached the sink and the dead-letter queue.

    python3 -m unittest discover -s clients/python -v

WARREN_BIN names the binary (default: target/debug/warren of this
repository); AMQP_URL the broker (default: guest on 127.0.0.1).
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WARREN = os.environ.get("WARREN_BIN", os.path.join(ROOT, "target", "debug", "warren"))


def rabbitmqctl(*args):
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True).stdout


class Pipeline:
    """A pipeline `{name}`: stage `py` (the handler) -> `out` (a sink)."""

    def __init__(self, code, settings=""):
        self.dir = tempfile.TemporaryDirectory()
        self.name = "tpy_" + uuid.uuid4().hex[:10]
        path = lambda name: os.path.join(self.dir.name, name)
        with open(path("stage.py"), "w") as f:
            f.write("import warren_stage\n" + textwrap.dedent(code))
        self.file = path("pipeline.yaml")
        self.sink = path("out.jsonl")
        with open(self.file, "w") as f:
            f.write(textwrap.dedent(f"""
                pipeline: {self.name}
                stages:
                  py:
                    exec: {{ command: [{sys.executable}, {path("stage.py")}], env: {{ PYTHONPATH: {HERE} }} }}
                    retry: {{ attempts: 3, backoff: [200ms] }}
                    outputs: [out, other]
                {textwrap.indent(settings, "    ")}
                  out:
                    sink: {{ path: {self.sink} }}
                  other:
                    sink: {{ path: {path("other.jsonl")} }}
                """))

    def run(self, inputs):
        """`warren run` on the inputs: (exit code, stdout + stderr)."""
        input_path = os.path.join(self.dir.name, "in.jsonl")
        with open(input_path, "w") as f:
            f.write("".join(json.dumps(i) + "\n" for i in inputs))
        done = subprocess.run(
            [WARREN, "run", self.file, "--input", input_path],
            capture_output=True, text=True, cwd=self.dir.name, timeout=180,
        )
        return done.returncode, done.stdout + done.stderr

    def results(self, name="out.jsonl"):
        try:
            with open(os.path.join(self.dir.name, name)) as f:
                return [json.loads(line) for line in f]
        except FileNotFoundError:
            return []

    def dead(self):
        listed = subprocess.run(
            [WARREN, "dlq", self.file, "py", "list"], capture_output=True, text=True
        ).stdout
        return listed

    def close(self):
        for queue in rabbitmqctl("list_queues", "name", "-q", "--no-table-headers").split():
            if queue.startswith(self.name + "."):
                rabbitmqctl("delete_queue", queue)
        rabbitmqctl("eval", 'rabbit_exchange:delete(rabbit_misc:r(<<"/">>, exchange, <<"%s">>), false, <<"test">>).' % self.name)
        self.dir.cleanup()


class Helper(unittest.TestCase):
    def pipeline(self, code, settings=""):
        pipeline = Pipeline(code, settings)
        self.addCleanup(pipeline.close)
        return pipeline

    def test_a_function_emits_finishes_dead_letters_and_retries(self):
        p = self.pipeline("""
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
            import asyncio, time
            started = []
            async def handle(body, ctx):
                started.append(time.monotonic())
                await asyncio.sleep(0.5)
                ctx.emit({"n": body["n"], "left": ctx.seconds_left() > 0})
            warren_stage.run(handle)
            """, settings="concurrency: 8")
        code, said = p.run([{"n": n} for n in range(16)])
        self.assertEqual(code, 0, said)
        results = p.results()
        self.assertEqual(sorted(r["n"] for r in results), list(range(16)), said)
        self.assertTrue(all(r["left"] for r in results))


if __name__ == "__main__":
    unittest.main()
