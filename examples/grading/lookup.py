"""The grading example's `lookup` stage in Python, an `exec` stage: it finds
a company's website (here derived from its name, as a stand-in for a
directory lookup) and passes the company on to `grade`. The same as
worker.rs, for teams that write Python; choose it in pipeline.yaml:

    lookup:
      exec: [python3, lookup.py]
      outputs: [grade]
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
import warren_stage  # noqa: E402


def slug(name):
    """Lower-case letters and digits of the name, other runs of characters
    as one `-` (letters of any script stay)."""
    out = []
    for c in name.lower():
        if c.isalnum():
            out.append(c)
        elif out and out[-1] != "-":
            out.append("-")
    text = "".join(out).strip("-")
    return text[:63] if text else "unnamed"


def lookup(body, ctx):
    company = body.get("company")
    if not isinstance(company, str):
        raise warren_stage.Dead("no company name")
    ctx.emit(dict(body, website="https://www.%s.example" % slug(company)))


warren_stage.run(lookup)
