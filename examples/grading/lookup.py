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

# From this repository; installed (`pip install ./clients/python`), drop this line.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
from warren_stage import Dead, serve, stage  # noqa: E402


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


@stage("lookup")
def lookup(body, ctx):
    company = body.get("company")
    if not isinstance(company, str):
        raise Dead("no company name")
    return dict(body, website="https://www.%s.example" % slug(company))  # emitted to `grade`


if __name__ == "__main__":
    serve()
