"""A pipeline run by the real `warren` against the real broker, for the
tests: a program (the Python code under test, run with this interpreter,
so with the installed `warren_stage`), its stages, `warren run` on some
inputs, and what reached the sinks and the dead-letter queues.

WARREN_BIN names the binary (default: target/debug/warren of this
repository); AMQP_URL the broker (default: guest on 127.0.0.1).
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
WARREN = os.environ.get("WARREN_BIN", os.path.join(ROOT, "target", "debug", "warren"))


def rabbitmqctl(*args):
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True).stdout


class Pipeline:
    """A pipeline `{name}` whose exec stages run `program` (Python code).
    `stages` is the YAML of its stages, where `{program}` is the exec
    command and `{dir}` the pipeline's folder; by default one stage `py`
    (retries after 200 ms) with outputs `out` and `other`, two sinks."""

    DEFAULT = """
        py:
          exec: {program}
          outputs: [out, other]
          SETTINGS
        out:
          sink: { path: {dir}/out.jsonl }
        other:
          sink: { path: {dir}/other.jsonl }
        """

    def __init__(self, program, stages=None, settings="", prefix="tpy"):
        self.dir = tempfile.TemporaryDirectory()
        self.name = "%s_%s" % (prefix, uuid.uuid4().hex[:10])
        with open(self.path("stage.py"), "w") as f:
            f.write(textwrap.dedent(program))
        command = "[%s, %s]" % (sys.executable, self.path("stage.py"))
        if "retry:" not in settings:
            settings += "\n  retry: { attempts: 3, backoff: [200ms] }"
        stages = textwrap.dedent(stages or self.DEFAULT).replace("SETTINGS", settings)
        stages = stages.replace("{program}", command).replace("{dir}", self.dir.name)
        self.file = self.path("pipeline.yaml")
        with open(self.file, "w") as f:
            f.write("pipeline: %s\nstages:\n%s" % (self.name, textwrap.indent(stages, "  ")))

    def path(self, name):
        return os.path.join(self.dir.name, name)

    def run(self, inputs, stage=None):
        """`warren run` on the inputs: (exit code, stdout + stderr)."""
        with open(self.path("in.jsonl"), "w") as f:
            f.write("".join(json.dumps(i) + "\n" for i in inputs))
        command = [WARREN, "run", self.file, "--input", self.path("in.jsonl")]
        if stage:
            command += ["--stage", stage]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.dir.name,
                              timeout=300, env=dict(os.environ, RUST_LOG="info"))
        return done.returncode, done.stdout + done.stderr

    def results(self, name="out.jsonl"):
        try:
            with open(self.path(name)) as f:
                return [json.loads(line) for line in f]
        except FileNotFoundError:
            return []

    def dead(self, stage="py"):
        return subprocess.run([WARREN, "dlq", self.file, stage, "list"],
                              capture_output=True, text=True).stdout

    def close(self):
        """Deletes the pipeline's queues and exchanges (its own and its delay
        cascade's; one rabbitmqctl call each), and its folder."""
        rabbitmqctl("eval", DELETE_QUEUES % self.name)
        rabbitmqctl("eval", DELETE_EXCHANGES % (self.name, self.name))
        self.dir.cleanup()


# The exchange `{pipeline}` and those whose names start with `{pipeline}.`
# (the delay cascade), deleted in the broker.
DELETE_EXCHANGES = ('N = <<"%s">>, P = <<"%s.">>, length([rabbit_exchange:delete(element(2, X), false, <<"test">>) '
                    '|| X <- rabbit_exchange:list(<<"/">>), '
                    'element(4, element(2, X)) =:= N orelse '
                    'binary:longest_common_prefix([element(4, element(2, X)), P]) =:= byte_size(P)]).')

# The queues whose names start with `{pipeline}.`, deleted in the broker.
DELETE_QUEUES = ('P = <<"%s.">>, length([rabbit_amqqueue:delete(Q, false, false, <<"test">>) '
                 '|| Q <- rabbit_amqqueue:list(<<"/">>), '
                 'binary:longest_common_prefix([element(4, amqqueue:get_name(Q)), P]) =:= byte_size(P)]).')
