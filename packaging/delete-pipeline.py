#!/usr/bin/env python3
"""Deletes a pipeline's queues and exchanges from the broker: every one
named PIPELINE or PIPELINE.something (DESIGN.md, "Names on the broker"),
through the management API. The packaging tests clean up with it.

    packaging/delete-pipeline.py PIPELINE [MANAGEMENT_URL]

MANAGEMENT_URL defaults to WARREN_MANAGEMENT_URL, else
http://guest:guest@127.0.0.1:15672."""

import base64
import json
import os
import sys
import urllib.parse
import urllib.request


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    prefix = sys.argv[1]
    base = sys.argv[2] if len(sys.argv) == 3 else os.environ.get(
        "WARREN_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
    url = urllib.parse.urlsplit(base)
    user = urllib.parse.unquote(url.username or "guest")
    password = urllib.parse.unquote(url.password or "guest")
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    origin = f"{url.scheme}://{url.hostname}:{url.port or 15672}"

    def call(method, path):
        request = urllib.request.Request(
            origin + path, method=method, headers={"Authorization": "Basic " + auth})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response) if method == "GET" else None

    deleted = 0
    for kind in ("queues", "exchanges"):
        for item in call("GET", f"/api/{kind}/%2F?columns=name"):
            name = item["name"]
            if name == prefix or name.startswith(prefix + "."):
                call("DELETE", f"/api/{kind}/%2F/" + urllib.parse.quote(name, safe=""))
                deleted += 1
    print(f"deleted {deleted} queues and exchanges of {prefix}")


if __name__ == "__main__":
    main()
