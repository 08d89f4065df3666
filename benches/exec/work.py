"""fanout3's `work` stage in Python, an exec stage written with
clients/python/warren_stage.py: the sha256 of the part as compact JSON,
emitted as {"id", "part", "digest"}. Used by the benchmark harness
(`cargo bench -p warren-command --bench compare`)."""

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
import warren_stage  # noqa: E402


async def work(part, ctx):
    data = json.dumps(part, separators=(",", ":")).encode()
    ctx.emit({"id": part["id"], "part": part["part"], "digest": hashlib.sha256(data).hexdigest()})


warren_stage.run(work)
