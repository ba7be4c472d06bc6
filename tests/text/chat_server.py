"""A real HTTP server on 127.0.0.1 that speaks the chat-completions API, scripted per request.

Used by the describe-labels tests and ``bench/describe.py`` with the real ``openai`` client::

    with ChatServer(script=lambda n, req: ("ok", None)) as srv:
        OpenAI(base_url=srv.url, api_key="k")...

``script(n, request_json)`` is called for the n-th request (0-based) and returns one of
``("ok", text_or_None)`` (None: echo a description built from the prompt), ``("status", code,
headers)``, ``("hang", seconds)``, ``("empty", None)``.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


def answer_for(prompt: str) -> str:
    """A deterministic 'LLM' answer: the stem line of the prompt plus a definition."""
    stem = prompt.strip().splitlines()[-1]
    return f"{stem} It includes every pixel of this class and excludes everything else."


class ChatServer:
    def __init__(self, script: Callable | None = None, latency: float = 0.0, model: str = "tiny-llm",
                 api_key: str | None = None):
        self.script = script or (lambda n, req: ("ok", None))
        self.latency, self.model, self.api_key = latency, model, api_key
        self.requests: list[dict] = []  # every request body received
        self.auth_headers: list[str] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # keep test output clean
                pass

            def setup(self):
                super().setup()
                # Headers and body go out in two writes; without TCP_NODELAY, Nagle + delayed ACK add
                # ~40 ms to every response, which no real server does.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _send(self, code: int, body: dict | None, headers: dict | None = None) -> None:
                data = json.dumps(body or {}).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, str(v))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self):  # noqa: N802
                with srv._lock:
                    srv.in_flight += 1
                    srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
                try:
                    self._post()
                finally:
                    with srv._lock:
                        srv.in_flight -= 1

            def do_GET(self):  # noqa: N802 - counters, for a server run in another process
                if self.path.rstrip("/").endswith("/stats"):
                    with srv._lock:
                        body = {"requests": len(srv.requests), "max_in_flight": srv.max_in_flight}
                    return self._send(200, body)
                return self._send(404, {"error": {"message": f"no route {self.path}"}})

            def _post(self):
                length = int(self.headers.get("Content-Length") or 0)
                req = json.loads(self.rfile.read(length) or b"{}")
                with srv._lock:
                    n = len(srv.requests)
                    srv.requests.append(req)
                    srv.auth_headers.append(self.headers.get("Authorization", ""))
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if srv.api_key is not None and self.headers.get("Authorization") != f"Bearer {srv.api_key}":
                    return self._send(401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}})
                if req.get("model") != srv.model:
                    return self._send(404, {"error": {"message": f"The model `{req.get('model')}` does not exist",
                                                      "code": "model_not_found"}})
                if srv.latency:
                    time.sleep(srv.latency)
                action = srv.script(n, req)
                if action[0] == "hang":
                    time.sleep(action[1])
                    return self._send(200, _completion(srv.model, answer_for(req["messages"][-1]["content"])))
                if action[0] == "status":
                    code, headers = action[1], action[2] if len(action) > 2 else None
                    return self._send(code, {"error": {"message": f"scripted {code}"}}, headers)
                if action[0] == "empty":
                    return self._send(200, _completion(srv.model, None))
                text = action[1] if action[1] is not None else answer_for(req["messages"][-1]["content"])
                return self._send(200, _completion(srv.model, text))

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def prompts(self) -> list[str]:
        return [r["messages"][-1]["content"] for r in self.requests]

    def __enter__(self) -> "ChatServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _completion(model: str, text: str | None) -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def serve_forever(latency: float = 0.0) -> None:
    """Run a server in this process until killed; print its URL on the first line of stdout."""
    import sys

    with ChatServer(latency=latency) as srv:
        print(srv.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            sys.stdout.flush()
