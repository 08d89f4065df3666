"""warren_stage.client against a real `warren supervise --http` (the routes
of `warren serve`, and the job keeper that fires callbacks), a real `warren
serve` alone (a stage without workers, for 429) and the real broker: send one and a batch, ids
from an Idempotency-Key and from a field, a callback, waiting for a job, a
429 waited out as its Retry-After says, a refused request, cancel. The
503 answers (the broker lost mid-request) are played by a small fake
server, which can say exactly which messages the broker confirmed."""

import http.server
import json
import os
import re
import socket
import subprocess
import threading
import time
import unittest
import urllib.request

from warren_stage.client import Busy, Client, Refused, Timeout, Unavailable, Unknown
from harness import WARREN, Pipeline

TOKEN = "0123456789abcdef0123"

PROGRAM = """
from warren_stage import stage, serve

@stage("double")
def double(body, ctx):
    return {"n": body["n"], "double": body["n"] * 2, "job": ctx.job}

@stage("held")
def held(body, ctx):
    return None

serve()
"""

STAGES = """
double:
  exec: {program}
  concurrency: 4
  outputs: [out]
held:
  exec: {program}
out:
  sink: { path: {dir}/out.jsonl }
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready_at(base):
    try:
        urllib.request.urlopen(urllib.request.Request(
            base + "/readyz", headers={"Authorization": "Bearer " + TOKEN}), timeout=5)
        return True
    except OSError:
        return False


def tracked(pipeline):
    """Adds job tracking and the serve settings to a pipeline file."""
    with open(pipeline.file) as f:
        text = f.read()
    with open(pipeline.file, "w") as f:
        f.write(text.replace("stages:\n", 'jobs: { track: true }\nserve: { token: "%s", max_backlog: 3 }\nstages:\n'
                             % TOKEN, 1))


def eventually(check, limit=60.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    return check()


class Recorder(http.server.BaseHTTPRequestHandler):
    """Records requests; answers with the next of `answers` (status,
    headers, body), or 200."""

    def do_POST(self):
        self._answer()

    def do_GET(self):
        self._answer()

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.server.seen.append((self.command, self.path, headers, body))
        status, headers, answer = self.server.answers.pop(0) if self.server.answers else (200, {}, {})
        data = json.dumps(answer).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def fake_server(answers):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.seen, server.answers = [], list(answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = server.shutdown
    server.shutdown = lambda: (stop(), server.server_close())
    return server, "http://127.0.0.1:%d" % server.server_address[1]


class AgainstWarrenServe(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pipeline = Pipeline(PROGRAM, STAGES, prefix="tpyc")
        tracked(cls.pipeline)
        port = free_port()
        cls.base = "http://127.0.0.1:%d" % port
        cls.processes = []
        cls.start(cls.pipeline, "supervisor", "supervise", cls.pipeline.file, "--poll", "500ms",
                  "--http", "127.0.0.1:%d" % port)
        ready = eventually(lambda: ready_at(cls.base))
        assert ready, "warren serve did not get ready: " + cls.said()
        cls.warren = Client(cls.base, token=TOKEN, timeout=60)

    @classmethod
    def start(cls, pipeline, log, *args):
        with open(pipeline.path(log + ".log"), "a") as f:
            process = subprocess.Popen([WARREN, *args], cwd=pipeline.dir.name, stdout=subprocess.DEVNULL,
                                       stderr=f, env=dict(os.environ, RUST_LOG="info"))
        cls.processes.append(process)
        return process


    @classmethod
    def said(cls):
        said = ""
        for log in ["supervisor"]:
            try:
                with open(cls.pipeline.path(log + ".log")) as f:
                    said += "--- %s\n%s" % (log, f.read())
            except FileNotFoundError:
                pass
        return said

    @classmethod
    def tearDownClass(cls):
        for process in cls.processes:
            process.terminate()
        for process in cls.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        cls.pipeline.close()

    def test_send_one_with_a_key_and_wait_for_its_job(self):
        key = "order-%d" % time.monotonic_ns()
        sent = self.warren.send("double", {"n": 21}, key=key)
        self.assertEqual((sent.ids, sent.job), ([key], key))
        again = self.warren.send("double", {"n": 21}, key=key)  # a resend: the same job
        self.assertEqual(again.job, key)
        state = self.warren.wait(key, timeout=120)
        self.assertEqual(state["state"], "done", state)
        records = eventually(lambda: [r for r in self.pipeline.results() if r["job"] == key])
        self.assertEqual(records, [{"n": 21, "double": 42, "job": key}], self.said())

    def test_a_key_is_made_up_when_none_is_given(self):
        sent = self.warren.send("double", {"n": 5})
        self.assertEqual(len(sent.job), 32)
        self.assertEqual(self.warren.wait(sent.job, timeout=120)["state"], "done")

    def test_send_a_batch_with_ids_from_a_field(self):
        base = time.monotonic_ns()
        rows = [{"order": "o%d-%d" % (base, n), "n": n} for n in range(7)]
        sent = self.warren.send_many("double", rows, id_field="order")
        self.assertEqual(sent.ids, [r["order"] for r in rows])
        for id_ in sent.ids:
            self.assertEqual(self.warren.wait(id_, timeout=120)["state"], "done")
        done = eventually(lambda: sorted(r["n"] for r in self.pipeline.results() if r["job"] in sent.ids)
                          if len([r for r in self.pipeline.results() if r["job"] in sent.ids]) == 7 else None)
        self.assertEqual(done, list(range(7)))

    def test_a_batch_without_ids_gets_the_servers(self):
        sent = self.warren.send_many("double", [{"n": 100 + n} for n in range(3)])
        self.assertEqual(len(sent.ids), 3)
        self.assertTrue(all(sent.ids), sent)

    def test_a_callback_gets_the_settled_job(self):
        server, url = fake_server([])
        self.addCleanup(server.shutdown)
        sent = self.warren.send("double", {"n": 8}, callback=url + "/hook")
        posted = eventually(lambda: [s for s in server.seen if s[1] == "/hook"], limit=120)
        self.assertTrue(posted, self.said())
        _, _, headers, body = posted[0]
        self.assertEqual(headers.get("idempotency-key"), sent.job)
        self.assertEqual(json.loads(body)["state"], "done")

    def test_refused_requests_raise_refused(self):
        with self.assertRaises(Refused) as refused:
            self.warren.send("no_such_stage", {"n": 1})
        self.assertEqual(refused.exception.status, 404)
        self.assertIn("no stage `no_such_stage`", str(refused.exception))
        with self.assertRaises(Refused) as unauthorised:
            Client(self.base, token="wrong-token-wrong-token").send("double", {"n": 1})
        self.assertEqual(unauthorised.exception.status, 401)
        with self.assertRaises(ValueError):
            self.warren.send_many("double", [{"n": 1}], id_field="order")

    def test_a_full_stage_is_waited_out_as_retry_after_says(self):
        # `warren serve` alone: stage `held` has no worker until the end of
        # this test, its queue grows over serve.max_backlog (3), and the
        # server answers 429 with Retry-After.
        p = Pipeline(PROGRAM, STAGES, prefix="tpyc")
        tracked(p)
        port = free_port()
        base = "http://127.0.0.1:%d" % port
        processes = [self.start(p, "serve", "serve", p.file, "--listen", "127.0.0.1:%d" % port)]

        def stop():
            for process in processes:
                process.terminate()
                process.wait()
            p.close()

        self.addCleanup(stop)
        self.assertTrue(eventually(lambda: ready_at(base)), "warren serve did not get ready")
        statuses = []
        for n in range(40):
            request = urllib.request.Request(
                base + "/v1/stages/held/messages", data=json.dumps({"n": n}).encode(),
                headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"})
            try:
                statuses.append(urllib.request.urlopen(request, timeout=30).status)
            except urllib.error.HTTPError as error:
                statuses.append(error.code)
                retry_after = float(error.headers["Retry-After"])
                break
            time.sleep(0.3)
        self.assertEqual(statuses[-1], 429, statuses)
        warren = Client(base, token=TOKEN)
        # Within a short time limit: Busy, with the server's advice.
        with self.assertRaises(Busy) as busy:
            warren.send("held", {"n": "busy"}, timeout=1)
        self.assertEqual(busy.exception.retry_after, retry_after)
        # Within a long one: waits Retry-After between tries, and gets
        # through once a worker took the backlog.
        timer = threading.Timer(2.0, lambda: processes.append(
            self.start(p, "held", "worker", p.file, "--stage", "held")))
        timer.start()
        started = time.monotonic()
        sent = warren.send("held", {"n": "through"}, timeout=120)
        took = time.monotonic() - started
        timer.join()
        self.assertGreaterEqual(sent.attempts, 2, sent)
        self.assertGreaterEqual(took, retry_after * (sent.attempts - 1), sent)

    def test_cancel(self):
        sent = self.warren.send("double", {"n": 1})
        try:
            state = self.warren.cancel(sent.job)
        except Refused as refused:
            if refused.status == 405:
                self.skipTest("this warren serve has no DELETE /v1/jobs/{id} yet: %s" % refused)
            raise
        self.assertIn(state.get("state", "cancelled"), ("cancelled", "done"))

    def test_a_delay_is_sent(self):
        sent = self.warren.send("double", {"n": 3}, delay=1.5)
        self.assertEqual(self.warren.wait(sent.job, timeout=120)["state"], "done")
        # Whether warren held it back 1.5 s is for the server's tests (the
        # delay is being added there; today's server accepts and ignores it).


class Resends(unittest.TestCase):
    """503s and lost answers, played by a fake server."""

    def test_a_batch_503_resends_only_the_unconfirmed_with_the_same_ids(self):
        server, url = fake_server([
            (503, {}, {"error": "2 of 4 messages confirmed", "confirmed": ["a", "c"]}),
            (202, {}, {"ids": ["b", "d"]}),
        ])
        self.addCleanup(server.shutdown)
        rows = [{"k": k} for k in "abcd"]
        sent = Client(url, timeout=30).send_many("s", rows, id_field="k")
        self.assertEqual(sent.ids, ["a", "b", "c", "d"])
        self.assertEqual(sent.attempts, 2)
        (_, first, _, body1), (_, second, _, body2) = server.seen
        self.assertEqual(first, second)
        self.assertIn("id_field=k", second)
        self.assertEqual([json.loads(line)["k"] for line in body2.splitlines()], ["b", "d"])

    def test_a_single_503_resends_the_same_key(self):
        server, url = fake_server([
            (503, {}, {"error": "the broker is unreachable; nothing was sent", "confirmed": []}),
            (202, {}, {"ids": ["k1"], "job": "k1"}),
        ])
        self.addCleanup(server.shutdown)
        sent = Client(url, timeout=30).send("s", {"n": 1}, key="k1", delay="30s", callback="http://x/y")
        self.assertEqual((sent.job, sent.attempts), ("k1", 2))
        keys = [headers.get("idempotency-key") for _, _, headers, _ in server.seen]
        self.assertEqual(keys, ["k1", "k1"])
        self.assertTrue(re.search(r"delay=30s", server.seen[0][1]) and "callback=" in server.seen[0][1])

    def test_503_until_the_time_limit_is_unavailable(self):
        answer = (503, {}, {"error": "the broker is unreachable; nothing was sent", "confirmed": []})
        server, url = fake_server([answer] * 50)
        self.addCleanup(server.shutdown)
        with self.assertRaises(Unavailable) as unavailable:
            Client(url, timeout=1).send("s", {"n": 1})
        self.assertEqual(unavailable.exception.confirmed, [])
        self.assertGreaterEqual(len(server.seen), 2)

    def test_a_batch_without_ids_resends_after_the_confirmed_ones(self):
        # The server names only the confirmed ids (the first lines, as it
        # confirms in order): the rest go again.
        server, url = fake_server([
            (503, {}, {"error": "1 of 3 messages confirmed", "confirmed": ["x1"]}),
            (202, {}, {"ids": ["x2", "x3"]}),
        ])
        self.addCleanup(server.shutdown)
        sent = Client(url, timeout=30).send_many("s", [{"n": 1}, {"n": 2}, {"n": 3}])
        self.assertEqual(sent.ids, ["x1", "x2", "x3"])
        self.assertEqual([json.loads(line)["n"] for line in server.seen[1][3].splitlines()], [2, 3])

    def test_a_503_that_names_the_ids_resends_each_with_its_id(self):
        server, url = fake_server([
            (503, {}, {"error": "1 of 2 confirmed", "confirmed": ["s1"], "ids": ["s1", "s2"]}),
            (202, {}, {"ids": ["s2"], "job": "s2"}),
        ])
        self.addCleanup(server.shutdown)
        sent = Client(url, timeout=30).send_many("s", [{"n": 1}, {"n": 2}])
        self.assertEqual(sent.ids, ["s1", "s2"])
        self.assertEqual(server.seen[1][2].get("idempotency-key"), "s2")

    def test_no_answer_to_a_batch_without_ids_is_unknown_not_resent(self):
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            url = "http://127.0.0.1:%d" % listener.getsockname()[1]
            with self.assertRaises(Unknown):
                Client(url, timeout=1).send_many("s", [{"n": 1}])
            with self.assertRaises(Timeout):
                Client(url, timeout=1).send("s", {"n": 1})


if __name__ == "__main__":
    unittest.main()
