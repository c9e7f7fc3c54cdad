"""Fixtures of the pipeline tests: a real HTTP server on 127.0.0.1 that keeps every JSON body posted to it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pipeline_support import Webhook


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    box: list[Webhook] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            item = json.loads(body)
            item["_path"], item["_time"] = self.path, time.time()
            box[0].received.append(item)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.append(Webhook(server))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield box[0]
    server.shutdown()
    server.server_close()



@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import slurm_support
    from support.system import require

    require("slurm")  # a missing program: skipped by name (a failure under CI, which installs it)
    why = slurm_support.missing()
    if why:
        pytest.skip(why)
    cluster = slurm_support.start(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()
