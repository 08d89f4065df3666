"""An exec stage for the integration tests, speaking the protocol by hand
(not through clients/python, which has tests of its own) and driven by the
fields of each message:

- `sleep_ms`: take this long (messages are handled on threads, so answers
  interleave);
- `emit`: a list of bodies to emit to every output; `emit_to`: {stage: body};
- `retry_until` (with `after`): answer retry while the attempt is below it;
- `dead`: answer dead with this reason;
- `exit_until`: exit the whole program (code 3) while the attempt is below it;
- `hang_until`: never answer while the attempt is below it (saying so on
  stderr);
- `garbage_until`: write a line that is not the protocol while the attempt
  is below it;
- `spawn_child`: start `sleep 1000` (a child of the program, in its
  process group) and write its pid to this file;
- `dump_env`: write the program's environment to this file, as JSON.

With CRASH_STARTS=LOW-HIGH in its environment, its starts LOW to HIGH
(counted in the file WARREN_TEST_RECORD.starts) exit at once, code 4.
With MODE=noread in its environment it never reads stdin; with
MODE=serial it handles one message at a time, in the order given (as a PHP
program does), instead of each on a thread of its own. Every message it
starts is appended to the file WARREN_TEST_RECORD (which the stage's `env`
must give it) as `id attempt pid`.
"""

import json
import os
import subprocess
import sys
import threading
import time

out_lock = threading.Lock()


def say(*answers):
    text = "".join(json.dumps(answer) + "\n" for answer in answers)
    with out_lock:
        sys.stdout.write(text)
        sys.stdout.flush()


def record(message):
    path = os.environ.get("WARREN_TEST_RECORD")
    if path:
        with open(path, "a") as f:
            f.write("%s %d %d\n" % (message["id"], message["attempt"], os.getpid()))


def handle(message):
    body, mid, attempt = message["body"], message["id"], message["attempt"]
    record(message)
    if "dump_env" in body:
        with open(body["dump_env"], "w") as f:
            json.dump(dict(os.environ), f)
    if "spawn_child" in body:
        child = subprocess.Popen(["sleep", "1000"])
        with open(body["spawn_child"], "w") as f:
            f.write(str(child.pid))
    time.sleep(body.get("sleep_ms", 0) / 1000.0)
    if attempt < body.get("exit_until", 0):
        sys.stderr.write("exiting on purpose at %s\n" % mid)
        sys.stderr.flush()
        os._exit(3)
    if attempt < body.get("hang_until", 0):
        sys.stderr.write("hanging on purpose at %s\n" % mid)
        sys.stderr.flush()
        time.sleep(3600)
    if attempt < body.get("garbage_until", 0):
        with out_lock:
            sys.stdout.write("this is not the protocol\n")
            sys.stdout.flush()
        return
    # The emits and the last answer in one write: a program killed by
    # another message's exit either wrote all of them or none.
    answers = [{"id": mid, "emit": item} for item in body.get("emit", [])]
    for stage, item in body.get("emit_to", {}).items():
        answers.append({"id": mid, "emit": item, "to": stage})
    if attempt < body.get("retry_until", 0):
        answers.append({"id": mid, "retry": "not yet", "after": body.get("after", "1s")})
    elif "dead" in body:
        answers.append({"id": mid, "dead": body["dead"]})
    else:
        answers.append({"id": mid, "done": True})
    say(*answers)


def crash_at_start():
    spec, path = os.environ.get("CRASH_STARTS"), os.environ.get("WARREN_TEST_RECORD")
    if not spec or not path:
        return
    with open(path + ".starts", "a") as f:
        f.write("%d\n" % os.getpid())
    with open(path + ".starts") as f:
        n = len(f.read().splitlines())
    low, high = (int(part) for part in spec.split("-"))
    if low <= n <= high:
        sys.stderr.write("crashing at start %d on purpose\n" % n)
        sys.stderr.flush()
        os._exit(4)


def main():
    crash_at_start()
    if os.environ.get("MODE") == "noread":
        time.sleep(3600)
    threads = []
    for line in sys.stdin:
        if os.environ.get("MODE") == "serial":
            handle(json.loads(line))
            continue
        thread = threading.Thread(target=handle, args=(json.loads(line),))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    sys.stderr.write("stdin closed; all done\n")


main()
