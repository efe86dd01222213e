#!/usr/bin/python3
"""httpfault.py — a small HTTP(S) server with Range, If-Range, ETag and scripted faults, for
download tests (RELIABILITY.md Part 4 "httpfault"; the faults are curl's <servercmd> ideas).

Usage: httpfault.py --file ARTIFACT [--tls CERT:KEY ...] [--plain]
Listens on 127.0.0.1, one free port per --tls pair (HTTPS with that certificate) and one for
--plain (HTTP), and prints one line "ports P1 P2 ..." in that order once all listen. It exits
when its standard input reaches EOF (the test that started it is gone) or on SIGTERM.

The artifact is read from --file at every request, so a test changes the object by rewriting
the file; its ETag is the first 16 hex digits of its SHA-256 (quoted, strong), Last-Modified
its mtime. Every path serves that file; the query string scripts a fault (several may be
combined with "&"):
  cut=N       close the connection once the body reaches absolute offset N (TLS: no
              close_notify), whatever the Range
  norange     ignore Range (and If-Range): always 200 with the whole file
  noifrange   ignore If-Range (serve the Range even if the object changed)
  stream      200 without a length, then the file over and over until the client leaves
  idle        send the headers, then nothing until the client leaves (at most 30 s)
  trickle     send the headers, then one body byte per 100 ms
  redirect=U  302 to U ("PLAIN" in U is replaced by the --plain port, "SELF" by this port)
Otherwise: 206 for "Range: bytes=S-" (S < size, and If-Range, if any, equal to the current
ETag or Last-Modified), 416 for S >= size, else 200. Requests are logged to stderr only with
-v.
"""
import argparse
import email.utils
import hashlib
import http.server
import os
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse

IDLE_MAX_S = 30  # a forgotten server connection ends by itself


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "httpfault"
    sys_version = ""

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("httpfault: %s\n" % (fmt % args))

    def _send(self, data):
        try:
            self.wfile.write(data)
            self.wfile.flush()
            return True
        except (OSError, ValueError):
            return False

    def _abort(self):
        """Cut the connection without a TLS close_notify or an orderly HTTP end."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        self.close_connection = True
        raise ConnectionAbortedError("scripted cut")

    def _wait_client_gone(self, limit_s):
        sock = self.connection
        sock.settimeout(0.1)
        end = time.monotonic() + limit_s
        while time.monotonic() < end:
            try:
                if sock.recv(1) == b"":
                    return
            except socket.timeout:
                continue
            except (OSError, ssl.SSLError):
                return

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        with open(self.server.file, "rb") as fh:
            data = fh.read()
            mtime = os.fstat(fh.fileno()).st_mtime
        size = len(data)
        etag = '"%s"' % hashlib.sha256(data).hexdigest()[:16]
        lm = email.utils.formatdate(mtime, usegmt=True)

        if "redirect" in q:
            loc = q["redirect"][0].replace("PLAIN", str(self.server.plain_port))
            loc = loc.replace("SELF", str(self.server.server_address[1]))
            self.send_response(302)
            self.send_header("Location", loc)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            return
        if "stream" in q:
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            while self._send(data):
                pass
            return

        start = None
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and rng.endswith("-") and "norange" not in q:
            try:
                start = int(rng[6:-1])
            except ValueError:
                start = None
        if_range = self.headers.get("If-Range")
        if start is not None and if_range is not None and "noifrange" not in q:
            if if_range not in (etag, lm):
                start = None  # the object changed: the whole current one
        if start is not None and start >= size:
            self.send_response(416)
            self.send_header("Content-Range", "bytes */%d" % size)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            return
        if start is None:
            start = 0
            self.send_response(200)
        else:
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, size - 1, size))
        self.send_header("Content-Length", str(size - start))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", lm)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if "idle" in q:
            self.wfile.flush()
            self._wait_client_gone(IDLE_MAX_S)
            return
        if "trickle" in q:
            for i in range(start, size):
                if not self._send(data[i:i + 1]):
                    return
                time.sleep(0.1)
            return
        end = size
        if "cut" in q:
            end = max(start, min(size, int(q["cut"][0])))
        if not self._send(data[start:end]):
            return
        if end < size:
            self._abort()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, ctx, file, verbose):
        super().__init__(("127.0.0.1", 0), Handler)
        self.ctx = ctx
        self.file = file
        self.verbose = verbose
        self.plain_port = 0

    def get_request(self):
        sock, addr = self.socket.accept()
        if self.ctx is not None:
            # The handshake runs in the connection's thread (first read), not in accept: a
            # client that refuses the certificate must not stall the other connections.
            sock = self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        # Handshake refusals, cut connections and clients that leave are the point of this
        # server: say nothing unless asked.
        if self.verbose:
            super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", required=True)
    ap.add_argument("--tls", action="append", default=[], metavar="CERT:KEY")
    ap.add_argument("--plain", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()

    servers = []
    for pair in a.tls:
        cert, key = pair.split(":", 1)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        servers.append(Server(ctx, a.file, a.verbose))
    if a.plain:
        servers.append(Server(None, a.file, a.verbose))
    if not servers:
        ap.error("nothing to serve: give --tls and/or --plain")
    plain_port = servers[-1].server_address[1] if a.plain else 0
    for s in servers:
        s.plain_port = plain_port
        threading.Thread(target=s.serve_forever, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print("ports " + " ".join(str(s.server_address[1]) for s in servers), flush=True)
    while sys.stdin.buffer.read(4096):
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
