"""``sfn_wasm_guest.http`` outside a component, as a handler's own tests use it: stubbed,
and over urllib against a local server."""

import socket
import sys
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sfn_wasm_guest import http  # noqa: E402


class Echo(BaseHTTPRequestHandler):
    def do_PUT(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        answer = f"{self.path} {body.decode()}".encode()
        status = 404 if self.path == "/missing" else 200
        self.send_response(status)
        self.send_header("X-Method", self.command)
        self.send_header("X-Twice", "one")
        self.send_header("X-Twice", "two")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


class HttpTest(unittest.TestCase):
    def test_a_stub_sees_the_request_in_its_normal_form_and_answers_it(self):
        seen = []

        def fake(request):
            seen.append(request)
            return http.Response(201, {"Content-Type": "application/json"}, '{"id": 7}')

        with http.stub(fake):
            response = http.request("post", "https://api.example.com/orders?x=1", {"X-Key": "k"}, "order")
        self.assertEqual(response.status, 201)
        self.assertTrue(response.ok)
        self.assertEqual(response.headers, {"content-type": "application/json"})
        self.assertEqual(response.json(), {"id": 7})
        self.assertEqual(len(seen), 1)
        self.assertEqual(seen[0].method, "POST")
        self.assertEqual(seen[0].url, "https://api.example.com/orders?x=1")
        self.assertEqual(seen[0].headers, {"x-key": "k"})
        self.assertEqual(seen[0].body, b"order")

    def test_a_stub_that_raises_an_http_error_acts_out_a_failure(self):
        def denied(request):
            raise http.HttpError("HTTP-request-denied")

        with http.stub(denied):
            with self.assertRaises(http.HttpError) as raised:
                http.get("https://elsewhere.example.com/")
        self.assertEqual(raised.exception.name, "HTTP-request-denied")

    def test_without_a_stub_requests_go_out_through_urllib(self):
        server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
        port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            response = http.request("PUT", f"http://127.0.0.1:{port}/a?b=c", body=b"hi")
            self.assertEqual(response.status, 200)
            self.assertEqual(response.headers["x-method"], "PUT")
            self.assertEqual(response.text(), "/a?b=c hi")
            self.assertEqual(response.headers["x-twice"], "one, two")
            # A 4xx is a response, not an error, as over wasi:http.
            self.assertEqual(http.request("PUT", f"http://127.0.0.1:{port}/missing").status, 404)
        finally:
            server.shutdown()
            server.server_close()
        # Nothing listens on a port just closed.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        with self.assertRaises(http.HttpError) as raised:
            http.get(f"http://127.0.0.1:{free}/")
        self.assertEqual(raised.exception.name, "connection-refused")

    def test_the_build_finds_an_import_of_http_in_the_source(self):
        import tempfile

        from sfn_wasm_guest.__main__ import mentions_http

        for source, found in [
            ("from sfn_wasm_guest import http\n", True),
            ("import sfn_wasm_guest.http as h\n", True),
            ("def f():\n    from sfn_wasm_guest.http import get\n", True),
            ("from sfn_wasm_guest import handler\nimport http\n", False),
        ]:
            with tempfile.TemporaryDirectory() as folder:
                Path(folder, "handler.py").write_text(source)
                # A venv's copy of the SDK is not the project's code.
                Path(folder, ".venv").mkdir()
                Path(folder, ".venv", "x.py").write_text("from sfn_wasm_guest import http\n")
                self.assertEqual(mentions_http(Path(folder)), found, source)

    def test_a_url_that_is_not_http_is_refused(self):
        with self.assertRaises(ValueError):
            http.get("file:///etc/passwd")


if __name__ == "__main__":
    unittest.main()
