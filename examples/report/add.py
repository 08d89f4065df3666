"""The report example's `add` stage: adds up what the gather stage `sum`
collected for one request, `{"job", "items", "dead_letters"}`."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
import warren_stage  # noqa: E402


def add(gathered, ctx):
    items = gathered.get("items", [])
    ctx.emit({
        "report": gathered.get("job"),
        "total": sum(item.get("total", 0) for item in items),
        "databases": len(items),
        "failed": sorted(d["id"] + ": " + d["reason"] for d in gathered.get("dead_letters", [])),
    })


warren_stage.run(add)
