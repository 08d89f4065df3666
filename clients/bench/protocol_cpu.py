"""Protocol CPU per message of an exec-stage program, without warren or a
broker: feeds N message lines (fanout3 `work` parts) to the program's
stdin as warren would, reads its answers, and prints the program's CPU
(user + system) per message.

    python3 clients/bench/protocol_cpu.py [-n 20000] [-c 100] -- python3 benches/exec/work.py
    python3 clients/bench/protocol_cpu.py -- php benches/exec/work.php

At most `-c` messages are in the program's hands at once (warren's
`concurrency`); the program's CPU includes its start (measured apart with
N = 0 and subtracted).
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time


def line(n):
    body = {"id": n // 3, "part": n % 3, "body": "seed %d " % n + "x" * 180}
    return ('{"id":"m%d","job":"m%d","stage":"work","attempt":1,"deadline_ms":30000,"body":%s}\n'
            % (n, n // 3, json.dumps(body, separators=(",", ":")))).encode()


def run(command, messages, concurrency):
    env = dict(os.environ, WARREN_CONCURRENCY=str(concurrency), WARREN_STAGE="work")
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    slots = threading.Semaphore(concurrency)
    lines = [line(n) for n in range(messages)]

    def feed():
        for data in lines:
            slots.acquire()
            child.stdin.write(data)
            child.stdin.flush()
        child.stdin.close()

    feeder = threading.Thread(target=feed)
    started = time.monotonic()
    feeder.start()
    done = emitted = 0
    for answer in child.stdout:
        answer = json.loads(answer)
        if "emit" in answer:
            emitted += 1
        else:
            done += 1
            slots.release()
    feeder.join()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - started
    if status != 0 or done != messages:
        sys.exit("the program exited with %d after %d of %d messages" % (status, done, messages))
    return usage.ru_utime + usage.ru_stime, wall, emitted


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20000, help="messages")
    parser.add_argument("-c", type=int, default=100, help="messages in hand at once")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    start_cpu, _, _ = run(args.command, 0, args.c)
    cpu, wall, emitted = run(args.command, args.n, args.c)
    per = (cpu - start_cpu) / args.n * 1e6
    print("%s: %d messages (%d emitted), %.1f us of the program's CPU per message, %.0f messages/s"
          % (" ".join(args.command), args.n, emitted, per, args.n / wall))


if __name__ == "__main__":
    main()
