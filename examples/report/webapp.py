"""The web app's side of the report example: it submits a report request to
`warren serve`, waits for the job to settle and shows the report it got
back in the job's `result`; it reads no file. `report()` is what a route of
a Django or Flask app would call; run as a script it asks for one report and
prints it.

    python3 examples/report/webapp.py http://127.0.0.1:8080 db01 db02 old01
"""

import json
import os
import sys
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
from warren_stage.client import Client  # noqa: E402


def report(warren, databases, timeout=120):
    """Asks for a report over `databases`; returns (state, report)."""
    request_id = "web-" + uuid.uuid4().hex[:12]
    sent = warren.send("split", {"report": request_id, "databases": databases}, key=request_id)
    job = warren.wait(sent.job, timeout=timeout)
    result = job.get("result") or [None]
    return job["state"], result[0]


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: webapp.py BASE_URL DATABASE...")
    warren = Client(sys.argv[1], token=os.environ.get("WARREN_SERVE_TOKEN"))
    state, got = report(warren, sys.argv[2:])
    print("job %s; report: %s" % (state, json.dumps(got, sort_keys=True)))


if __name__ == "__main__":
    main()
