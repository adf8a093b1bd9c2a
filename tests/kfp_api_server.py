"""A small HTTP server speaking the KFP v2beta1 REST endpoints that ``kfp.Client`` calls
for upload / version / experiment / run, with in-memory state, recording every request.

There is no KFP backend on these machines; this lets ``lverb submit`` be tested through
the real kfp SDK client and its real HTTP traffic.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

NOW = "2026-11-27T12:00:00Z"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes


@dataclass
class KfpState:
    pipelines: dict = field(default_factory=dict)      # id -> {"display_name", "versions": {id: name}}
    version_uploads: dict = field(default_factory=dict)  # version id -> {"description", "package": bytes}
    experiments: dict = field(default_factory=dict)    # id -> name
    runs: dict = field(default_factory=dict)           # id -> body
    requests: list = field(default_factory=list)
    final_state: str = "SUCCEEDED"


def _name_from_filter(query: dict) -> str | None:
    raw = query.get("filter", [None])[0]
    if not raw:
        return None
    for p in json.loads(raw).get("predicates", []):
        if p.get("key") in ("display_name", "name"):
            return p.get("string_value") or p.get("stringValue")
    return None


def make_handler(state: KfpState):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _send(self, obj, code=200):
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            url = urlparse(self.path)
            rec = Recorded(self.command, url.path, parse_qs(url.query), {k.lower(): v for k, v in self.headers.items()}, body)
            state.requests.append(rec)
            return rec

        def _upload_file(self, rec):
            head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
            message = BytesParser(policy=HTTP).parsebytes(head + rec.body)
            for part in message.iter_parts():
                if part.get_param("name", header="content-disposition") == "uploadfile":
                    return part.get_payload(decode=True)
            raise ValueError("no uploadfile in the upload")

        def do_GET(self):
            rec = self._record()
            p = rec.path
            if p == "/apis/v2beta1/healthz":
                return self._send({"multi_user": False})
            if p == "/apis/v2beta1/pipelines":
                name = _name_from_filter(rec.query)
                items = [{"pipeline_id": i, "display_name": v["display_name"], "created_at": NOW}
                         for i, v in state.pipelines.items() if name in (None, v["display_name"])]
                return self._send({"pipelines": items, "total_size": len(items)})
            if p.startswith("/apis/v2beta1/pipelines/") and p.endswith("/versions"):
                pid = p.split("/")[4]
                name = _name_from_filter(rec.query)
                items = [{"pipeline_id": pid, "pipeline_version_id": i, "display_name": n, "created_at": NOW,
                          "description": state.version_uploads.get(i, {}).get("description", "")}
                         for i, n in state.pipelines[pid]["versions"].items() if name in (None, n)]
                return self._send({"pipeline_versions": items, "total_size": len(items)})
            if p == "/apis/v2beta1/experiments":
                name = _name_from_filter(rec.query)
                items = [{"experiment_id": i, "display_name": n, "created_at": NOW}
                         for i, n in state.experiments.items() if name in (None, n)]
                return self._send({"experiments": items, "total_size": len(items)})
            if p.startswith("/apis/v2beta1/runs/"):
                rid = p.rsplit("/", 1)[1]
                run = state.runs[rid]
                return self._send(dict(run, run_id=rid, state=state.final_state, created_at=NOW, finished_at=NOW))
            return self._send({"error": f"not served: GET {p}"}, 404)

        def do_POST(self):
            rec = self._record()
            p = rec.path
            if p == "/apis/v2beta1/pipelines/upload":
                self._upload_file(rec)
                pid = uuid.uuid4().hex
                vid = uuid.uuid4().hex
                name = rec.query["name"][0]
                state.pipelines[pid] = {"display_name": name, "versions": {vid: name}}
                return self._send({"pipeline_id": pid, "display_name": name, "created_at": NOW})
            if p == "/apis/v2beta1/pipelines/upload_version":
                package = self._upload_file(rec)
                pid = rec.query["pipelineid"][0]
                vid = uuid.uuid4().hex
                name = rec.query["name"][0]
                state.pipelines[pid]["versions"][vid] = name
                state.version_uploads[vid] = {"description": rec.query.get("description", [""])[0], "package": package}
                return self._send({"pipeline_id": pid, "pipeline_version_id": vid, "display_name": name, "created_at": NOW})
            if p == "/apis/v2beta1/experiments":
                body = json.loads(rec.body)
                eid = uuid.uuid4().hex
                state.experiments[eid] = body["display_name"]
                return self._send({"experiment_id": eid, "display_name": body["display_name"], "created_at": NOW})
            if p == "/apis/v2beta1/runs":
                body = json.loads(rec.body)
                rid = uuid.uuid4().hex
                state.runs[rid] = body
                return self._send(dict(body, run_id=rid, state="PENDING", created_at=NOW))
            return self._send({"error": f"not served: POST {p}"}, 404)

    return Handler


class KfpApiServer:
    def __init__(self):
        self.state = KfpState()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.state))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
