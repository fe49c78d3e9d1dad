"""A local Hugging Face Hub: enough of the Hub's HTTP API for huggingface_hub 2.x (and so for transformers'
`from_pretrained`, `push_to_hub` and `pipeline`) to work offline, with repositories stored on disk.

    python -m hub.server --root ./local-hub --port 8765 [--token SECRET]
    export HF_ENDPOINT=http://127.0.0.1:8765 HF_HUB_DISABLE_XET=1

Implemented: create repo, preupload, LFS batch/upload/verify, commit (ndjson), validate-yaml, whoami, repo info by
revision, tree listing, resolve (GET/HEAD, ranges) and the error codes huggingface_hub reads (X-Error-Code
RepoNotFound, RevisionNotFound, EntryNotFound). Binds 127.0.0.1 unless told otherwise; with --token, writes and
reads of private repositories need `Authorization: Bearer <token>` (LFS uploads carry a one-time capability in their
URL instead; a private repository is "not found" without the token, as on the Hub).

Scope: the offline path of one user on one machine (loopback), not a public service. It still keeps request text
out of response headers, closes connections that stay silent for 30 s or send too slowly (headers within 20 s, a body
at 500 bytes/s or more), serves at most 64 at once, and streams files from disk.
"""

import argparse
import base64
import binascii
import hashlib
import io
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import NamedTuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from .store import (
    Conflict,
    Forbidden,
    HubStore,
    InvalidInput,
    MissingContent,
    NotFound,
    RepoId,
    StoreError,
    check_repo_path,
    lfs_pointer,
    uses_lfs,
)

logger = logging.getLogger("hub.server")
PREFIX_TO_TYPE = {"datasets": "dataset", "spaces": "space"}
TYPE_TO_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
MAX_JSON_BODY = 8 * 1024**2  # JSON and ndjson requests are read into memory: at most this much
MAX_UPLOAD = 64 * 1024**3  # one LFS object, streamed to disk
REQUEST_TIMEOUT = 30.0  # seconds a connection may stay silent
REQUEST_DEADLINE = 300.0  # seconds from a request's first byte to its last (headers and body)
HEADER_DEADLINE = 20.0  # seconds from a request's first byte to the end of its headers
MIN_BODY_RATE = 500.0  # bytes/s a request body must average, after BODY_GRACE seconds
BODY_GRACE = 20.0
MAX_CONNECTIONS = 64  # open at once: a single user's tools need a handful
READ_CHUNK = 1024**2
MAX_BATCH_OBJECTS = 1000  # objects in one LFS batch request (huggingface_hub sends at most 256)
GRANT_SECONDS = 3600.0  # an LFS upload URL is valid this long
MAX_GRANTS = 10_000  # upload URLs outstanding at once
STORE_STATUS = {InvalidInput: 400, NotFound: 404, Forbidden: 403, Conflict: 412, MissingContent: 422}


class HubError(Exception):
    """An error the server answers with an HTTP status, a message and, where the client reads one, an
    X-Error-Code."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}

    @classmethod
    def from_store(cls, error: StoreError) -> "HubError":
        return cls(STORE_STATUS[type(error)], error.message, error.code)


@contextmanager
def malformed(what: str):
    """Turns the errors of reading a client's JSON of the wrong shape into 400, naming `what` was malformed."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as error:
        detail = f"missing {error}" if isinstance(error, KeyError) else str(error)
        raise HubError(400, f"Malformed {what}: {detail}") from None


def header_safe(text: str) -> str:
    """`text` with every character that is not printable ASCII (CR and LF above all) replaced by "?": request text
    must never end a header line or start a new one."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


def has_control_characters(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def escape_control_characters(text: str) -> str:
    """`text` with every control character written as \\xNN: request text in a log line cannot repaint a terminal."""
    return "".join(f"\\x{ord(c):02x}" if ord(c) < 32 or 127 <= ord(c) < 160 else c for c in text)


class DeadlineReader(io.RawIOBase):
    """A connection's reads for a handler: each waits at most the handler's silence timeout, and none past the
    current request's deadline (RequestClock); past it, TimeoutError."""

    def __init__(self, connection, handler: "HubRequestHandler"):
        self.connection = connection
        self.handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        clock = self.handler.clock
        ends = clock.deadline()
        if ends is not None:
            left = ends - time.monotonic()
            if left <= 0:
                raise TimeoutError(clock.missed())
            self.connection.settimeout(min(self.handler.timeout, left))
        else:
            self.connection.settimeout(self.handler.timeout)
        received = self.connection.recv_into(buffer)
        clock.received(received)
        return received


class RequestClock:
    """The deadlines of one request on a connection, so that no slow drip holds a slot: its headers must be in
    `header_deadline` seconds after its first byte; its body must arrive at `min_body_rate` bytes/s on average, after
    `body_grace` seconds; and the whole request within `request_deadline` of its first byte (as nginx's
    client_header_timeout and Apache's mod_reqtimeout MinRate)."""

    def __init__(self, server: "LocalHub"):
        self.server = server
        self.started = self.body_started = None
        self.body_bytes = 0

    def received(self, count: int):
        if self.started is None and count:
            self.started = time.monotonic()
        elif self.body_started is not None:
            self.body_bytes += count

    def body_begins(self):
        """The headers are in: from here the body's rate counts."""
        self.body_started = time.monotonic()

    def deadline(self) -> float | None:
        if self.started is None:
            return None
        whole = self.started + self.server.request_deadline
        if self.body_started is None:
            return min(whole, self.started + self.server.header_deadline)
        return min(whole, self.body_started + self.server.body_grace + self.body_bytes / self.server.min_body_rate)

    def missed(self) -> str:
        server = self.server
        if self.body_started is None:
            return f"the request's headers were not complete within {server.header_deadline:g} s"
        if time.monotonic() < self.started + server.request_deadline:
            return (f"the request body arrived slower than {server.min_body_rate:g} bytes/s "
                    f"({self.body_bytes} bytes in {time.monotonic() - self.body_started:.0f} s)")
        return f"the request was not complete within {server.request_deadline:g} s"


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The inclusive (start, end) that a Range header asks of `size` bytes; None without one."""
    if not header:
        return None
    spec = header.strip()
    start_text, dash, end_text = spec[len("bytes="):].partition("-")
    if not spec.startswith("bytes=") or not dash or "," in spec:
        raise HubError(400, f"Unsupported Range {header!r}: use one range, bytes=START-[END] or bytes=-SUFFIX")
    try:
        if start_text.strip():
            start = int(start_text)
            end = int(end_text) if end_text.strip() else size - 1
        else:
            suffix = int(end_text)  # the last `suffix` bytes
            start, end = max(size - suffix, 0), size - 1
            if suffix <= 0:
                start = size
    except ValueError:
        raise HubError(400, f"Malformed Range {header!r}") from None
    if start < 0 or start >= size or end < start:
        raise HubError(416, f"Range {header!r} cannot be satisfied: the file has {size} bytes",
                       headers={"Content-Range": f"bytes */{size}"})
    return start, min(end, size - 1)


class Target(NamedTuple):
    """What a request's URL names: the repository, the revision (default main) and a path in it (or an LFS oid)."""

    repo: RepoId | None = None
    revision: str = "main"
    path: str = ""


def lfs_info(entry: dict, oid_key: str) -> dict:
    """The `lfs` field of a listed file: its sha256 (under `oid_key`), size and the size of its pointer file."""
    return {oid_key: entry["sha256"], "size": entry["size"],
            "pointerSize": len(lfs_pointer(entry["sha256"], entry["size"]))}


class UploadGrants:
    """The one-time capabilities of LFS upload URLs (capability → the sha256 it may upload), each valid for
    GRANT_SECONDS; at most MAX_GRANTS at once, the oldest dropped first, so unused batches cannot pile up."""

    def __init__(self, seconds: float = GRANT_SECONDS, limit: int = MAX_GRANTS):
        self.seconds, self.limit = seconds, limit
        self._grants: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def grant(self, oid: str) -> str:
        capability = secrets.token_urlsafe(24)
        with self._lock:
            self._expire()
            while len(self._grants) >= self.limit:
                self._grants.popitem(last=False)
            self._grants[capability] = (oid, time.monotonic() + self.seconds)
        return capability

    def allows(self, capability: str, oid: str) -> bool:
        with self._lock:
            self._expire()
            return self._grants.get(capability, (None, 0))[0] == oid

    def spend(self, capability: str):
        with self._lock:
            self._grants.pop(capability, None)

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._grants)

    def _expire(self):
        now = time.monotonic()
        while self._grants and next(iter(self._grants.values()))[1] <= now:
            self._grants.popitem(last=False)


class LocalHub(ThreadingHTTPServer):
    """One thread per connection, at most `max_connections` at once (more are answered 503 and closed); a connection
    idle, or a request body stalled, for `timeout` seconds is closed (a stalled body is answered 408), and so is one
    whose request is too slow (RequestClock: its headers, its body's rate, the whole request) is closed too."""

    daemon_threads = True

    def __init__(self, address, store: HubStore, token: str | None = None, timeout: float = REQUEST_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS, request_deadline: float = REQUEST_DEADLINE,
                 header_deadline: float = HEADER_DEADLINE, min_body_rate: float = MIN_BODY_RATE,
                 body_grace: float = BODY_GRACE):
        super().__init__(address, HubRequestHandler)
        self.store = store
        self.token = token
        self.request_timeout = timeout
        self.request_deadline, self.header_deadline = request_deadline, header_deadline
        self.min_body_rate, self.body_grace = min_body_rate, body_grace
        self.slots = threading.BoundedSemaphore(max_connections)
        self.upload_grants = UploadGrants()

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
                                b"Connection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LocalHub

    @property
    def timeout(self) -> float:
        """Seconds a read of the connection may wait (StreamRequestHandler sets it on the socket)."""
        return self.server.request_timeout

    # ------------------------------------------------------------------------------------------------ plumbing

    def setup(self):
        super().setup()
        self.clock = RequestClock(self.server)  # the current request's deadlines (DeadlineReader)
        self.rfile = io.BufferedReader(DeadlineReader(self.connection, self))

    def handle_one_request(self):
        self.clock = RequestClock(self.server)
        super().handle_one_request()

    def log_message(self, fmt, *args):
        # http.server's own log_message escapes control characters; this replacement must too
        logger.info("%s %s", self.address_string(), escape_control_characters(fmt % args))

    def _segments(self) -> tuple[list[str], dict]:
        url = urlsplit(self.path)
        # split before unquoting: a revision such as refs%2Fpr%2F1 is one segment
        segments = [unquote(s) for s in url.path.split("/")[1:]]
        if any(has_control_characters(s) for s in segments):
            raise HubError(400, "Control characters (CR, LF, ...) are not allowed in repository names, revisions or "
                                "paths")
        return segments, parse_qs(url.query)

    def _has_body(self) -> bool:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return True
        length = self.headers.get("Content-Length") or "0"
        return not length.strip().isdigit() or int(length) > 0

    def _body_chunks(self, limit: int):
        """The request body, piece by piece; more than `limit` bytes is refused with 413 before it is read (or
        as soon as a chunked body passes it)."""
        received = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    raise HubError(400, f"Malformed chunk size {line[:40]!r}") from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                received += size
                if received > limit:
                    raise HubError(413, f"Request body too large: more than {limit} bytes")
                yield from self._read_pieces(size)
                self.rfile.readline(1024)
        else:
            text = (self.headers.get("Content-Length") or "0").strip()
            if not text.isdigit():
                raise HubError(400, f"Malformed Content-Length {text!r}")
            if int(text) > limit:
                raise HubError(413, f"Request body too large: {text} bytes, at most {limit}")
            yield from self._read_pieces(int(text))
        self._body_read = True

    def _read_pieces(self, size: int):
        """The next `size` bytes of the body, in pieces of at most READ_CHUNK."""
        while size:
            piece = self.rfile.read(min(size, READ_CHUNK))
            if not piece:
                raise HubError(400, "The request body ended early")
            size -= len(piece)
            yield piece

    def _body(self, limit: int = MAX_JSON_BODY) -> bytes:
        return b"".join(self._body_chunks(limit))

    def _json_body(self) -> dict:
        body = self._body()
        try:
            payload = json.loads(body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise HubError(400, f"Invalid JSON body: {error}") from None
        if not isinstance(payload, dict):
            raise HubError(400, f"The JSON body must be an object, got a {type(payload).__name__}")
        return payload

    @property
    def endpoint(self) -> str:
        """The address the client reached this server at (its Host header), for the links it is handed."""
        host = self.headers.get("Host", "")
        if host and all(c.isalnum() or c in ".-:[]" for c in host):
            return f"http://{host}"
        return self.server.endpoint

    def _send(self, status: int, body: bytes = b"", content_type="application/json", headers=None, head=False,
              length: int | None = None):
        """`length`: the Content-Length to announce when it is not len(body) (HEAD of a file)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _send_json(self, payload, status=200, headers=None):
        self._send(status, json.dumps(payload).encode(), headers=headers)

    def _send_error(self, error: HubError, head=False):
        headers = {"X-Error-Message": header_safe(error.message), **error.headers}
        if error.code:
            headers["X-Error-Code"] = error.code
        if self._has_body() and not self._body_read:
            # the unread body would be read as the next request on this keep-alive connection: end it instead
            headers["Connection"] = "close"
            self.close_connection = True
        self._send(error.status, json.dumps({"error": error.message}).encode(), headers=headers, head=head)

    def _has_token(self) -> bool:
        token = self.server.token
        # as bytes: compare_digest refuses a str with a character beyond ASCII (a header may hold any byte)
        given = self.headers.get("Authorization", "").encode("latin-1", "replace")
        return token is None or secrets.compare_digest(given, f"Bearer {token}".encode())

    def _require_write_access(self):
        if not self._has_token():
            raise HubError(401, "Invalid or missing token: this server needs `Authorization: Bearer <token>` to write")

    def _require_read_access(self, repo: RepoId):
        """A private repository is read with the token only; without it, it does not exist (as on the Hub)."""
        if self.server.store.is_private(repo) and not self._has_token():
            raise HubError(404, f"Repository {repo.id} not found", "RepoNotFound")

    def _dispatch(self, method: str):
        head = method == "HEAD"
        self._body_read = False
        self.clock.body_begins()
        try:
            segments, query = self._segments()
            route = self._route(method, segments)
            if route is None:
                raise HubError(404, f"No route for {method} {urlsplit(self.path).path}")
            handler, target = route
            handler(target, query)
            if self._has_body() and not self._body_read:
                self.close_connection = True  # a body the handler did not need must not be read as a request
        except HubError as error:
            self._send_error(error, head=head)
        except StoreError as error:
            self._send_error(HubError.from_store(error), head=head)
        except ConnectionError as error:  # the client went away (or a blob shrank): nothing left to answer
            logger.info("%s %s: connection ended early (%s)", method, self.path, error)
            self.close_connection = True
        except TimeoutError as error:
            self.close_connection = True
            why = str(error) if str(error) != "timed out" else f"silent for {self.timeout:g} s"  # the socket's own
            self._send_error(HubError(408, f"The request was too slow: {why}"), head=head)
        except Exception as error:  # noqa: BLE001 - report, don't kill the server
            logger.exception("internal error on %s %s", method, self.path)
            self._send_error(HubError(500, f"Internal error: {error}"), head=head)

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    # ----------------------------------------------------------------------------------------------------- routes

    def _route(self, method: str, s: list[str]):
        """The handler for a request and what its URL names, parsed here once: (handler, Target) or None."""
        if s[:1] == ["api"]:
            if method == "POST" and s[1:] == ["repos", "create"]:
                return self.create_repo, Target()
            if method == "POST" and s[1:] == ["validate-yaml"]:
                return self.validate_yaml, Target()
            if method == "GET" and s[1:] == ["whoami-v2"]:
                return self.whoami, Target()
            if len(s) >= 4 and s[1] in ("models", "datasets", "spaces"):
                # /api/{type}s/{namespace}/{name}[/{action}[/{revision}[/{path}]]]
                action = s[4] if len(s) > 4 else None
                routes = {("POST", "preupload"): self.preupload, ("POST", "commit"): self.create_commit,
                          ("GET", None): self.repo_info, ("GET", "revision"): self.repo_info,
                          ("GET", "tree"): self.tree}
                handler = routes.get((method, action))
                if action in ("preupload", "commit") and len(s) > 6:  # .../{action}/{revision}, nothing after it
                    return None
                target = Target(RepoId(s[1][:-1], s[2], s[3]), s[5] if len(s) > 5 else "main", "/".join(s[6:]))
                return (handler, target) if handler else None
        if s[:2] == ["lfs", "upload"] and method == "PUT":
            return self.lfs_upload, Target(path=s[2] if len(s) > 2 else "")
        if s[:2] == ["lfs", "verify"] and method == "POST":
            return self.lfs_verify, Target()
        # /[datasets/|spaces/]{namespace}/{name}...
        repo_type = PREFIX_TO_TYPE.get(s[0], "model")
        rest = s[1:] if repo_type != "model" else s
        if method == "POST" and len(rest) == 6 and rest[1].endswith(".git") and rest[2:] == ["info", "lfs", "objects",
                                                                                            "batch"]:
            return self.lfs_batch, Target(RepoId(repo_type, rest[0], rest[1][: -len(".git")]))
        if method in ("GET", "HEAD") and len(rest) >= 5 and rest[2] == "resolve":
            return self.resolve, Target(RepoId(repo_type, rest[0], rest[1]), rest[3], "/".join(rest[4:]))
        return None

    # ------------------------------------------------------------------------------------------------- handlers

    def whoami(self, t, q):
        self._require_write_access()
        self._send_json({"type": "user", "name": "local", "fullname": "Local Hub user", "orgs": [],
                          "auth": {"accessToken": {"displayName": "local", "role": "write"}}})

    def validate_yaml(self, t, q):
        self._json_body()
        self._send_json({"errors": [], "warnings": []})

    def create_repo(self, t, q):
        self._require_write_access()
        payload = self._json_body()
        repo = RepoId(payload.get("type") or "model", payload.get("organization") or "local", payload.get("name", ""))
        url = f"{self.endpoint}/{TYPE_TO_PREFIX[repo.repo_type]}{repo.id}"
        # huggingface_hub 2.x sends "visibility"; older clients "private"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        if self.server.store.create(repo, private=private):
            self._send_json({"url": url, "name": repo.id, "id": repo.id})
        else:
            self._send_json({"url": url, "name": repo.id, "error": "You already created this repo"}, status=409)

    def preupload(self, t, q):
        self._require_write_access()
        payload = self._json_body()
        head = self.server.store.resolve(t.repo, t.revision)["files"]
        answer = []
        with malformed("preupload request"):
            files = [(f["path"], int(f.get("size", 0))) for f in payload.get("files", [])]
        for path, size in files:
            path = check_repo_path(path)
            lfs = uses_lfs(path, size)
            existing = head.get(path)
            # the client compares this oid with its own (sha256 for LFS, git sha1 otherwise) to skip unchanged files
            oid = None if existing is None else existing["sha256"] if existing["lfs"] else existing["git_oid"]
            answer.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._send_json({"files": answer})

    def lfs_batch(self, t, q):
        self._require_write_access()
        repo = t.repo
        self.server.store.refs(repo)  # 404 for an unknown repo
        payload = self._json_body()
        with malformed("LFS batch request"):
            operation = payload.get("operation")
            requested = [(str(obj["oid"]), int(obj["size"])) for obj in payload.get("objects", [])]
        if operation != "upload":
            raise HubError(400, "Only the LFS upload operation is supported")
        if len(requested) > MAX_BATCH_OBJECTS:
            raise HubError(413, f"An LFS batch of {len(requested)} objects; at most {MAX_BATCH_OBJECTS} per batch")
        objects = []
        for oid, size in requested:
            entry = {"oid": oid, "size": size}
            if not self.server.store.has_blob(oid, size):
                grant = self.server.upload_grants.grant(oid)
                base = self.endpoint
                entry["actions"] = {
                    "upload": {"href": f"{base}/lfs/upload/{oid}?grant={grant}"},
                    "verify": {"href": f"{base}/lfs/verify/{repo.repo_type}/{repo.namespace}/{repo.name}"},
                }
            objects.append(entry)
        self._send_json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                        headers={"Content-Type": "application/vnd.git-lfs+json"})

    def lfs_upload(self, t, q):
        oid = t.path
        grant = (q.get("grant") or [""])[0]
        if not self.server.upload_grants.allows(grant, oid):
            raise HubError(403, "This upload URL is not valid or has expired (ask the LFS batch endpoint for one)")
        self.server.store.put_blob_stream(self._body_chunks(MAX_UPLOAD), expected_sha256=oid)
        self.server.upload_grants.spend(grant)
        self._send(200)

    def lfs_verify(self, t, q):
        self._require_write_access()
        payload = self._json_body()
        with malformed("LFS verify request"):
            oid, size = str(payload["oid"]), int(payload["size"])
        if not self.server.store.has_blob(oid, size):
            raise HubError(404, f"LFS object {payload.get('oid')} was not uploaded (or has another size)")
        self._send_json({"message": "verified"})

    def create_commit(self, t, q):
        self._require_write_access()
        repo, branch = t.repo, t.revision
        header, additions, deletions = {}, {}, []
        for number, line in enumerate(self._body().splitlines(), 1):
            if not line.strip():
                continue
            with malformed(f"commit line {number}"):
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    header = {"summary": str(value.get("summary", "")), "description": str(value.get(
                        "description", "")), "parentCommit": value.get("parentCommit")}
                elif key == "file":
                    if value.get("encoding") == "base64":
                        content = base64.b64decode(value["content"], validate=True)
                    else:
                        content = value["content"].encode()
                    path = check_repo_path(value["path"])
                    additions[path] = {"sha256": self.server.store.put_blob(content), "size": len(content),
                                       "lfs": False}
                elif key == "lfsFile":
                    if value.get("algo", "sha256") != "sha256":
                        raise HubError(400, "Only sha256 LFS objects are supported")
                    additions[check_repo_path(value["path"])] = {"sha256": str(value["oid"]),
                                                                 "size": int(value["size"]), "lfs": True}
                elif key in ("deletedFile", "deletedFolder"):
                    deletions.append(str(value["path"]))
                else:
                    raise HubError(400, f"Unsupported commit operation {key!r} on line {number}")
        commit = self.server.store.commit(repo, branch, additions, deletions, header.get("summary", ""),
                                          header.get("description", ""), header.get("parentCommit"))
        url = f"{self.endpoint}/{TYPE_TO_PREFIX[repo.repo_type]}{repo.id}"
        self._send_json({"commitOid": commit["id"], "commitUrl": f"{url}/commit/{commit['id']}",
                         "pullRequestUrl": None})

    def repo_info(self, t, q):
        repo = t.repo
        self._require_read_access(repo)
        commit = self.server.store.resolve(repo, t.revision)
        date = datetime.fromtimestamp(commit["date"], tz=timezone.utc).isoformat().replace("+00:00", "Z")
        siblings = [
            {"rfilename": path, "size": e["size"], "blobId": e["git_oid"],
             **({"lfs": lfs_info(e, oid_key="sha256")} if e["lfs"] else {})}
            for path, e in commit["files"].items()
        ]
        self._send_json({"id": repo.id, "modelId": repo.id, "author": repo.namespace, "sha": commit["id"],
                         "lastModified": date, "createdAt": date,
                         "private": self.server.store.is_private(repo), "disabled": False,
                         "gated": False, "tags": [], "downloads": 0, "likes": 0, "siblings": siblings})

    def tree(self, t, q):
        repo, revision = t.repo, t.revision
        folder = t.path.strip("/")
        if folder:
            check_repo_path(folder)
        recursive = (q.get("recursive") or ["false"])[0].lower() == "true"
        self._require_read_access(repo)
        files = self.server.store.resolve(repo, revision)["files"]
        prefix = folder + "/" if folder else ""
        entries, folders = [], set()
        for path, e in files.items():
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                sub = prefix + "/".join(parts[:depth])
                if (recursive or depth == 1) and sub not in folders:
                    folders.add(sub)
                    entries.append({"type": "directory", "path": sub, "oid": hashlib.sha1(sub.encode()).hexdigest()})
            if recursive or len(parts) == 1:
                entry = {"type": "file", "path": path, "size": e["size"], "oid": e["git_oid"]}
                if e["lfs"]:
                    entry["lfs"] = lfs_info(e, oid_key="oid")
                entries.append(entry)
        if folder and not entries:
            raise HubError(404, f"{folder} not found in {repo.id} at {revision}", "EntryNotFound")
        self._send_json(entries)

    def resolve(self, t, q):
        head = self.command == "HEAD"
        self._require_read_access(t.repo)
        commit, entry = self.server.store.file_entry(t.repo, t.revision, t.path)
        headers = {"X-Repo-Commit": commit["id"], "Accept-Ranges": "bytes", "ETag": f'"{entry["git_oid"]}"'}
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{entry["sha256"]}"', "X-Linked-Size": str(entry["size"])})
        size = entry["size"]
        path = self.server.store.blob_file(entry["sha256"])
        requested = None if head else byte_range(self.headers.get("Range", ""), size)
        start, end = requested if requested is not None else (0, size - 1)
        if requested is not None:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        # the headers first (HEAD answers with the full size, as GET would), then the bytes, streamed from disk
        self._send(206 if requested else 200, content_type="application/octet-stream", headers=headers, head=True,
                   length=end - start + 1)
        if head:
            return
        with path.open("rb") as blob:
            blob.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                piece = blob.read(min(READ_CHUNK, remaining))
                if not piece:
                    raise ConnectionAbortedError(f"{path} is shorter than its recorded size")
                self.wfile.write(piece)
                remaining -= len(piece)


def serve(root: str, host: str = "127.0.0.1", port: int = 0, token: str | None = None, **limits) -> LocalHub:
    """A server bound to (host, port) (port 0: a free one); call serve_forever() on it, or run it in a thread.
    `limits`: LocalHub's timeout, max_connections, request_deadline, header_deadline, min_body_rate and body_grace."""
    return LocalHub((host, port), HubStore(root), token=token, **limits)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="folder that holds the repositories (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", default=None, help="writes, and reads of private repositories, need "
                        "`Authorization: Bearer TOKEN` (other reads do not)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    server = serve(args.root, args.host, args.port, args.token)
    logger.info("local Hub at %s, repositories in %s%s", server.endpoint, server.store.root,
                ", writes need the token" if args.token else "")
    logger.info("clients: export HF_ENDPOINT=%s HF_HUB_DISABLE_XET=1", server.endpoint)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
