"""The report example's `split` stage: one `query` message per database the
request names."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
import warren_stage  # noqa: E402


def split(request, ctx):
    databases = request.get("databases")
    if not isinstance(databases, list) or not databases:
        raise warren_stage.Dead("a request names its databases: {\"databases\": [...]}")
    for database in databases:
        ctx.emit({"report": request.get("report"), "database": database})


warren_stage.run(split)
