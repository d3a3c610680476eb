#!/usr/bin/env python3
"""Serve a folder on 127.0.0.1 with the headers that make the page cross-origin isolated
(COOP/COEP, needed for SharedArrayBuffer) and a Content-Security-Policy that keeps every request
on this origin. Prints the URL once listening; port 0 picks a free port.

    python3 tools/serve.py DIR [--port 8080] [--plain] [--log]

--plain leaves those headers out, as a static host that cannot set headers would (the page must
work there too, single-threaded and without shared memory); --log prints one line per request
("GET /path"), which the browser tests read to check what a visit downloaded; --fail PATH
(repeatable) answers PATH with a script that throws as it starts, which the browser tests use to
check that a worker that dies costs only the file it held; --replace PATH=FILE (repeatable)
answers PATH with FILE instead, which `make bench-memory` uses to put a stand-in in place of the
embedding helper.
"""
import argparse
import functools
import http.server
import sys
import threading

HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    # wasm needs 'wasm-unsafe-eval'; nothing may be fetched from anywhere but here. The threaded
    # build's pool starts its workers from blob: copies of a script of this origin.
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; "
    "style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-cache",
}


LOG_LOCK = threading.Lock()


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript"}

    plain = False
    log = False
    fail = frozenset()
    replace = {}

    def do_GET(self):
        path = self.path.split("?")[0]
        if path in self.fail or path in self.replace:
            if path in self.fail:
                body = b"throw new Error('this script was made to fail (serve.py --fail)');\n"
            else:
                with open(self.replace[path], "rb") as f:
                    body = f.read()
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def end_headers(self):
        if not self.plain:
            for k, v in HEADERS.items():
                self.send_header(k, v)
        super().end_headers()

    def log_request(self, code="-", size="-"):
        if self.log:
            # Requests are served on several threads; one write per line keeps lines whole.
            with LOG_LOCK:
                sys.stdout.write(f"{self.command} {self.path} {code}\n")
                sys.stdout.flush()

    def log_message(self, fmt, *args):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--plain", action="store_true", help="no COOP/COEP/CSP headers")
    ap.add_argument("--log", action="store_true", help="print each request")
    ap.add_argument("--fail", action="append", default=[], metavar="PATH",
                    help="answer PATH (such as /parse-worker.js) with a script that throws")
    ap.add_argument("--replace", action="append", default=[], metavar="PATH=FILE",
                    help="answer PATH (such as /embed-worker.js) with the script in FILE")
    args = ap.parse_args()
    Handler.fail = frozenset(args.fail)
    Handler.replace = dict(r.split("=", 1) for r in args.replace)
    Handler.plain = args.plain
    Handler.log = args.log
    handler = functools.partial(Handler, directory=args.dir)
    with http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler) as httpd:
        print(f"serving {args.dir} on http://127.0.0.1:{httpd.server_address[1]}/", flush=True)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            sys.exit(0)


if __name__ == "__main__":
    main()
