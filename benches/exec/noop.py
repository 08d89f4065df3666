"""A child that answers `done` to every message at once, speaking the exec
protocol directly (no helper): the benchmark's measure of what the protocol
costs warren per message."""

import json
import sys

for line in sys.stdin:
    sys.stdout.write('{"id":%s,"done":true}\n' % json.dumps(json.loads(line)["id"]))
    sys.stdout.flush()
