"""A local stand-in for the Hugging Face Hub (dataset repos only), on 127.0.0.1, for the real
streaming path (``datasets.load_dataset(..., streaming=True)`` with ``HF_ENDPOINT`` pointed here).

It answers the routes that huggingface_hub 2.x and datasets 5.x call for a dataset repo, read
from the installed clients' source (huggingface_hub/hf_api.py ``dataset_info``,
``list_repo_tree``, ``get_paths_info``; hf_file_system.py; file_download.py; utils/_http.py
``hf_raise_for_status``) and the Hub's API page (https://huggingface.co/docs/hub/api, read
2026-12-03):

- ``GET /api/datasets/{repo}[/revision/{rev}]``: the repo's info (id, sha, gated, cardData,
  siblings).
- ``GET /api/datasets/{repo}/tree/{rev}[/{path}]?recursive=&expand=``: entries
  ``{"type": "file"|"directory", "path", "oid", "size"}``.
- ``POST /api/datasets/{repo}/paths-info/{rev}`` (form ``paths``, ``expand``): the same
  entries for the paths that exist.
- ``GET|HEAD /datasets/{repo}/resolve/{rev}/{path}``: the file, with ``ETag``,
  ``X-Repo-Commit`` and byte ranges.

Errors carry the Hub's headers, which is how the client tells them apart: ``X-Error-Code:
RepoNotFound`` (401 without a token, as the Hub answers for a repo it will not confirm),
``GatedRepo`` (401 without a token, 403 with a token that was not granted access),
``EntryNotFound`` / ``RevisionNotFound`` (404). Faults for the retry tests: ``fail(status,
count, path_part)`` answers the next ``count`` matching requests with ``status`` (429 carries a
``Retry-After``). Every request is recorded with its Authorization header (the tests check
that a token arrived, or that none did).

A repo is built in the real layout the Hub shows for allenai/c4: a README.md whose YAML front
matter lists ``configs`` (``config_name``, ``data_files`` by split), and the data files under
one folder per config.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional
from urllib.parse import parse_qs, unquote, urlsplit

SHA = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, bytes]  # path in the repo -> content
    gated: bool = False  # needs a token on the allowed list
    allowed_tokens: tuple[str, ...] = ()


def jsonl_dataset(repo_id: str, configs: dict[str, list[str]], shards: int = 2, **kwargs) -> HubRepo:
    """A dataset repo with one folder of ``shards`` jsonl files per config (texts split evenly),
    and a README.md whose YAML lists each config's train files, as on the Hub."""
    files: dict[str, bytes] = {}
    card = ["---", "configs:"]
    for name, texts in configs.items():
        card += [f"- config_name: {name}", "  data_files:", "  - split: train", f"    path: {name}/train-*.jsonl"]
        for shard in range(shards):
            part = texts[shard::shards]
            files[f"{name}/train-{shard:05d}-of-{shards:05d}.jsonl"] = "".join(
                json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(part)).encode()
    card += ["---", "", f"# {repo_id}", ""]
    files["README.md"] = "\n".join(card).encode()
    return HubRepo(repo_id, files, **kwargs)


@dataclass
class _Fault:
    status: int
    count: int
    path_part: str


@dataclass
class FakeHub:
    repos: dict[str, HubRepo] = field(default_factory=dict)
    requests: list[tuple[str, str, Optional[str]]] = field(default_factory=list)  # (method, path, Authorization)
    faults: list[_Fault] = field(default_factory=list)
    on_request: Optional[Callable[[str, str], None]] = None  # called with (method, path) before each answer
    retry_after: str = "0"  # the Retry-After of a 429, in seconds (huggingface_hub waits it + 1 s between its own retries)
    server: Optional[ThreadingHTTPServer] = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, repo: HubRepo) -> None:
        self.repos[repo.repo_id] = repo

    def fail(self, status: int, count: int = 1, path_part: str = "") -> None:
        with self.lock:
            self.faults.append(_Fault(status, count, path_part))

    def heal(self) -> None:
        with self.lock:
            self.faults.clear()

    def _take_fault(self, path: str) -> Optional[int]:
        with self.lock:
            for fault in self.faults:
                if fault.path_part in path and fault.count > 0:
                    fault.count -= 1
                    return fault.status
        return None

    def start(self) -> "FakeHub":
        handler = type("Handler", (_HubHandler,), {"hub": self})  # a handler class bound to this hub
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def _oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class _HubHandler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        """Quiet: the tests read ``hub.requests``, not a request log on stderr."""

    # ---- answers -----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json", headers: Optional[dict] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value, status: int = 200) -> None:
        self._send(status, json.dumps(value).encode())

    def _error(self, status: int, code: Optional[str], message: str) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        if status == 429:
            headers["Retry-After"] = self.hub.retry_after
        self._send(status, json.dumps({"error": message}).encode(), headers=headers)

    # ---- routing -----------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def _route(self) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = parse_qs(parts.query)
        body = b""
        if self.command == "POST":
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        auth = self.headers.get("Authorization")
        self.hub.requests.append((self.command, self.path, auth))
        if self.hub.on_request is not None:
            self.hub.on_request(self.command, path)
        status = self.hub._take_fault(path)
        if status is not None:
            messages = {429: "You have been rate-limited; retry later.", 503: "Service Unavailable"}
            return self._error(status, None, messages.get(status, f"error {status}"))
        match = (re.match(r"^/api/datasets/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$", path)
                 or re.match(r"^/api/datasets/(?P<repo>[^/]+/[^/]+)/(?P<op>tree|paths-info)/(?P<rev>[^/]+)(?P<sub>/.*)?$", path)
                 or re.match(r"^/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", path))
        if not match:
            return self._error(404, None, "Not Found")
        repo = self.hub.repos.get(match["repo"])
        if repo is None:
            # the Hub does not say whether a repo it will not show exists: 401 without a token, 404 with one
            return self._error(401 if not auth else 404, "RepoNotFound", "Repository not found")
        if repo.gated and (auth or "").removeprefix("Bearer ") not in repo.allowed_tokens:
            if not auth:
                return self._error(401, "GatedRepo", "Access to this dataset is restricted. You must be authenticated to access it.")
            return self._error(403, "GatedRepo", "Access to this dataset is restricted and you are not in the authorized list.")
        groups = match.groupdict()
        if groups.get("rev") not in (None, "main", SHA):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {groups['rev']}")
        if "file" in groups and groups.get("file"):
            return self._file(repo, groups["file"])
        if groups.get("op") == "tree":
            return self._tree(repo, (groups.get("sub") or "").strip("/"), query.get("recursive", ["false"])[0] in ("true", "True", "1"))
        if groups.get("op") == "paths-info":
            form = parse_qs(body.decode())
            wanted = form.get("paths", [])
            return self._json([entry for entry in self._entries(repo, "", True) if entry["path"] in wanted])
        return self._info(repo)

    def _info(self, repo: HubRepo) -> None:
        self._json({
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id, "author": repo.repo_id.split("/")[0],
            "sha": SHA, "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2025-01-01T00:00:00.000Z",
            "private": False, "gated": "manual" if repo.gated else False, "disabled": False, "downloads": 0, "likes": 0,
            "tags": [], "cardData": {}, "siblings": [{"rfilename": name} for name in sorted(repo.files)],
        })

    def _entries(self, repo: HubRepo, prefix: str, recursive: bool) -> list[dict]:
        """The files and folders under ``prefix``: its direct children, or all of them when recursive."""
        entries: dict[str, dict] = {}
        for name, content in repo.files.items():
            if prefix and not name.startswith(prefix + "/"):
                continue
            parts = name.split("/")
            base = len(prefix.split("/")) if prefix else 0
            for depth in range(base + 1, len(parts)):  # the folders on the way down
                folder = "/".join(parts[:depth])
                entries.setdefault(folder, {"type": "directory", "oid": _oid(folder.encode()), "size": 0, "path": folder})
                if not recursive:
                    break
            if recursive or len(parts) == base + 1:
                entries[name] = {"type": "file", "oid": _oid(content), "size": len(content), "path": name}
        return sorted(entries.values(), key=lambda e: e["path"])

    def _tree(self, repo: HubRepo, prefix: str, recursive: bool) -> None:
        if prefix and not any(name.startswith(prefix + "/") for name in repo.files):
            return self._error(404, "EntryNotFound", f"{prefix} does not exist on main")
        self._json(self._entries(repo, prefix, recursive))

    def _file(self, repo: HubRepo, name: str) -> None:
        content = repo.files.get(name)
        if content is None:
            return self._error(404, "EntryNotFound", "Entry not found")
        headers = {"ETag": f'"{_oid(content)}"', "X-Repo-Commit": SHA, "Accept-Ranges": "bytes"}
        ranged = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range") or "")
        if ranged:
            start = int(ranged[1])
            end = min(int(ranged[2]) if ranged[2] else len(content) - 1, len(content) - 1)
            if start >= len(content):
                return self._send(416, b"", headers={"Content-Range": f"bytes */{len(content)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            return self._send(206, content[start:end + 1], "application/octet-stream", headers)
        self._send(200, content, "application/octet-stream", headers)


def hub_env(hub: FakeHub, hf_home, token: Optional[str] = None) -> dict[str, str]:
    """The environment that points huggingface_hub and datasets at ``hub`` (online, its own cache)."""
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_TOKEN": token or ""}
    return env
