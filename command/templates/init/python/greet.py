"""The stage `greet` of the pipeline {{name}} (pipeline.yaml).

warren starts this program once per worker and keeps it running; the
package warren-stage reads the messages and answers warren.
"""

import sys

try:
    from warren_stage import Dead, serve, stage
except ImportError:
    sys.exit(
        "greet.py: %s has no package warren-stage; activate the virtual "
        "environment that has it (. .venv/bin/activate, see README.md)" % sys.executable
    )


@stage("greet")
def greet(body, ctx):
    """{"name": "Ada"} -> {"name": "Ada", "greeting": "Hello, Ada!"}"""
    name = body.get("name")
    if not isinstance(name, str) or not name:
        # Can never succeed: to the dead-letter queue, with this reason.
        raise Dead("no name in the message")
    # What is returned goes to the stage's outputs, confirmed by the broker
    # before the message is acknowledged. Any other exception: retried later.
    return {"name": name, "greeting": "Hello, %s!" % name}


if __name__ == "__main__":
    serve()  # until warren closes stdin
