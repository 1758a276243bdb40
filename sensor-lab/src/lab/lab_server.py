"""Services of the traffic lab's server namespace (started by sensor-lab).

One process, several threads, standard library only:
  - HTTP on :80 (all addresses): static files from --root (pages and a large
    download), POST /login always answers a "login failed" page and
    POST /api/login always 401 (brute-force targets),
    POST /upload accepts and discards a body (exfiltration target);
  - TCP sink on :7000: accepts long-lived connections and reads until EOF
    (idle keepalive connections).
Exits on SIGTERM/SIGINT.
"""

import argparse
import http.server
import signal
import socket
import socketserver
import sys
import threading


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        while n > 0:
            chunk = self.rfile.read(min(n, 65536))
            if not chunk:
                break
            n -= len(chunk)

    def do_POST(self):
        self._body()
        if self.path.startswith("/login"):
            # A web form's failed login: the page says so (hydra's
            # http-post-form refuses targets answering 401, which it takes
            # for HTTP authentication).
            msg = b"<html><body>login failed</body></html>\n"
            self.send_response(200)
        elif self.path.startswith("/api/login"):
            msg = b"login failed\n"
            self.send_response(401)
        elif self.path.startswith("/upload"):
            msg = b"ok\n"
            self.send_response(200)
        else:
            msg = b"not found\n"
            self.send_response(404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(msg)))
        self.end_headers()
        self.wfile.write(msg)


class Web(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512


class Sink(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class SinkHandler(socketserver.BaseRequestHandler):
    def handle(self):
        while self.request.recv(65536):
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--http-port", type=int, default=80)
    ap.add_argument("--sink-port", type=int, default=7000)
    a = ap.parse_args()

    def handler(*args, **kw):
        return Handler(*args, directory=a.root, **kw)

    web = Web(("0.0.0.0", a.http_port), handler)
    sink = Sink(("0.0.0.0", a.sink_port), SinkHandler)
    for s in (web, sink):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
