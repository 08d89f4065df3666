"""The web app's side of the report example: it receives the POST warren
makes when a request's job is done or failed, and appends it (with its
Idempotency-Key) to the file named on the command line.

    python3 examples/report/callbacks.py PORT FILE
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

port, path = int(sys.argv[1]), sys.argv[2]


class Callback(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        state = json.loads(body)
        with open(path, "a") as out:
            out.write(json.dumps({"key": self.headers.get("Idempotency-Key"), "job": state["id"],
                                  "state": state["state"]}) + "\n")
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", port), Callback).serve_forever()
