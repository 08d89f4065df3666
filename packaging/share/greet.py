"""The example pipeline's `greet` stage (/etc/warren/example.yaml): one
greeting per message. A handler is one function; returning means done,
warren_stage.Dead dead-letters the message, any other exception retries it."""

import warren_stage


def greet(body, ctx):
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        raise warren_stage.Dead('a message is {"name": "..."}')
    ctx.emit({"greeting": f"Hello, {name}!", "attempt": ctx.attempt})


warren_stage.run(greet)
