"""A stand-in for `bentoml serve`: 127.0.0.1 only, /readyz 200 (or never, with --never-ready).

    python tests/loop/fake_server.py --port N [--never-ready]
Serves at most 500 requests, then exits; each request has a 5 s timeout.
"""

import argparse
from http.server import BaseHTTPRequestHandler, HTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--bento", default="")
parser.add_argument("--never-ready", action="store_true")
args = parser.parse_args()


class Handler(BaseHTTPRequestHandler):
    timeout = 5

    def do_GET(self):
        ready = self.path == "/readyz" and not args.never_ready
        self.send_response(200 if ready else 503)
        self.end_headers()
        self.wfile.write(args.bento.encode())

    def log_message(self, *a):
        pass


server = HTTPServer(("127.0.0.1", args.port), Handler)
for _ in range(500):
    server.handle_request()
