"""The report example's `query` stage: a slow query of one database (about
a second). A database whose name ends in 7 is busy at the first attempt
(retried a second later); one whose name starts with `old` does not exist
any more (dead-lettered: the report lists it as failed)."""

import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
import warren_stage  # noqa: E402


def query(message, ctx):
    database = str(message.get("database", ""))
    if database.startswith("old"):
        raise warren_stage.Dead("no database %s" % database)
    time.sleep(1.0)
    if database.endswith("7") and ctx.attempt == 1:
        raise warren_stage.Retry("%s is busy" % database, after=1)
    total = int(hashlib.sha256(database.encode()).hexdigest()[:4], 16) % 1000
    ctx.emit({"database": database, "total": total})


warren_stage.run(query)
