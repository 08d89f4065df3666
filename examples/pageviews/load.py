#!/usr/bin/env python3
"""The front ends of pageviews: EVENTS page views posted to `warren serve`
at BASE_URL in NDJSON batches of 500 (the Python client, clients/python),
from a few threads, each view with its own `view_id` as its message id (a
batch posted again after a lost answer is the same messages). Prints the
rate it reached.

    python3 examples/pageviews/load.py http://127.0.0.1:8080 EVENTS [THREADS]
"""
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
from warren_stage.client import Client  # noqa: E402

AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
]
PAGES = ["/", "/pricing", "/docs", "/blog/warren", "/signup", "/about"]


def views(run, thread, count):
    rand = random.Random(thread)
    for n in range(count):
        yield {
            "view_id": "%s-%d-%d" % (run, thread, n),
            "url": rand.choice(PAGES),
            "referrer": rand.choice(["", "https://search.example/", "https://news.example/"]),
            "ua": rand.choice(AGENTS),
            "load_ms": rand.randint(20, 3000),
            "ts": int(time.time() * 1000),
        }


def main():
    base, events = sys.argv[1], int(sys.argv[2])
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    run = "%x" % int(time.time())
    client = Client(base, timeout=120)

    def post(thread):
        share = events // threads + (1 if thread < events % threads else 0)
        batch = []
        for view in views(run, thread, share):
            batch.append(view)
            if len(batch) == 500:
                client.send_many("enrich", batch, id_field="view_id")
                batch = []
        if batch:
            client.send_many("enrich", batch, id_field="view_id")

    start = time.monotonic()
    workers = [threading.Thread(target=post, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    took = time.monotonic() - start
    print("posted %d page views in %.1f s: %.0f a minute" % (events, took, events / took * 60))


if __name__ == "__main__":
    main()
