"""A plain script as an exec stage's program: `exec: [python3, worker.py]`.
Two stages in one program; a third-party library or subprocess that
prints does no harm (stdout goes to warren's log)."""

import subprocess

from warren_stage import Dead, serve, stage


@stage("resize")
def resize(body, ctx):
    if "width" not in body:
        raise Dead("no width")
    subprocess.run(["echo", "resizing", str(body["width"])], check=True)  # to the log
    return {"photo": body["photo"], "width": body["width"] // 2}


@stage("caption")
async def caption(body, ctx):
    return {"photo": body["photo"], "caption": "%s, %dpx wide" % (body["photo"], body["width"])}


if __name__ == "__main__":
    serve()
