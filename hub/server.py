"""A local Hugging Face Hub: enough of the Hub's HTTP API for huggingface_hub 2.x (and so for transformers'
`from_pretrained`, `push_to_hub` and `pipeline`) to work offline, with repositories stored on disk.

    python -m hub.server --root ./local-hub --port 8765 [--token SECRET]
    export HF_ENDPOINT=http://127.0.0.1:8765 HF_HUB_DISABLE_XET=1

Implemented: create repo, preupload, LFS batch/upload/verify, commit (ndjson), validate-yaml, whoami, repo info by
revision, tree listing, resolve (GET/HEAD, ranges) and the error codes huggingface_hub reads (X-Error-Code
RepoNotFound, RevisionNotFound, EntryNotFound). Binds 127.0.0.1 unless told otherwise; with --token, writes need
`Authorization: Bearer <token>` (LFS uploads carry a one-time capability in their URL instead).
"""

import argparse
import base64
import hashlib
import json
import logging
import secrets
import threading
from datetime import datetime, timezone
from typing import NamedTuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from .store import HubError, HubStore, RepoId, check_repo_path, lfs_pointer, uses_lfs

logger = logging.getLogger("hub.server")
PREFIX_TO_TYPE = {"datasets": "dataset", "spaces": "space"}
TYPE_TO_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
MAX_BODY = 20 * 1024**3


class Target(NamedTuple):
    """What a request's URL names: the repository, the revision (default main) and a path in it (or an LFS oid)."""

    repo: RepoId | None = None
    revision: str = "main"
    path: str = ""


def lfs_info(entry: dict, oid_key: str) -> dict:
    """The `lfs` field of a listed file: its sha256 (under `oid_key`), size and the size of its pointer file."""
    return {oid_key: entry["sha256"], "size": entry["size"],
            "pointerSize": len(lfs_pointer(entry["sha256"], entry["size"]))}


class LocalHub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, store: HubStore, token: str | None = None):
        super().__init__(address, HubRequestHandler)
        self.store = store
        self.token = token
        self.upload_grants: dict[str, str] = {}  # capability → sha256 it may upload
        self.grants_lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LocalHub

    # ------------------------------------------------------------------------------------------------ plumbing

    def log_message(self, fmt, *args):
        logger.info("%s %s", self.address_string(), fmt % args)

    def _segments(self) -> tuple[list[str], dict]:
        url = urlsplit(self.path)
        # split before unquoting: a revision such as refs%2Fpr%2F1 is one segment
        return [unquote(s) for s in url.path.split("/")[1:]], parse_qs(url.query)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise HubError(413, "Request body too large")
        return self.rfile.read(length) if length else b""

    def _json_body(self):
        body = self._body()
        try:
            return json.loads(body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"Invalid JSON body: {error}") from None

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
        headers = {"X-Error-Message": error.message.encode("ascii", "replace").decode()}
        if error.code:
            headers["X-Error-Code"] = error.code
        self._send(error.status, json.dumps({"error": error.message}).encode(), headers=headers, head=head)

    def _require_write_access(self):
        token = self.server.token
        if token is None:
            return
        given = self.headers.get("Authorization", "")
        if not secrets.compare_digest(given, f"Bearer {token}"):
            raise HubError(401, "Invalid or missing token: this server needs `Authorization: Bearer <token>` to write")

    def _dispatch(self, method: str):
        head = method == "HEAD"
        try:
            segments, query = self._segments()
            route = self._route(method, segments)
            if route is None:
                self._body()
                raise HubError(404, f"No route for {method} {urlsplit(self.path).path}")
            handler, target = route
            handler(target, query)
        except HubError as error:
            self._send_error(error, head=head)
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
        url = f"{self.server.endpoint}/{TYPE_TO_PREFIX[repo.repo_type]}{repo.id}"
        if self.server.store.create(repo):
            self._send_json({"url": url, "name": repo.id, "id": repo.id})
        else:
            self._send_json({"url": url, "name": repo.id, "error": "You already created this repo"}, status=409)

    def preupload(self, t, q):
        self._require_write_access()
        files = self._json_body().get("files", [])
        head = self.server.store.resolve(t.repo, t.revision)["files"]
        answer = []
        for f in files:
            path = check_repo_path(f["path"])
            lfs = uses_lfs(path, int(f.get("size", 0)))
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
        if payload.get("operation") != "upload":
            raise HubError(400, "Only the LFS upload operation is supported")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry = {"oid": oid, "size": size}
            if not self.server.store.has_blob(oid, size):
                grant = secrets.token_urlsafe(24)
                with self.server.grants_lock:
                    self.server.upload_grants[grant] = oid
                base = self.server.endpoint
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
        with self.server.grants_lock:
            allowed = self.server.upload_grants.get(grant) == oid
        if not allowed:
            self._body()
            raise HubError(403, "This upload URL is not valid (ask the LFS batch endpoint for one)")
        self.server.store.put_blob(self._body(), expected_sha256=oid)
        with self.server.grants_lock:
            self.server.upload_grants.pop(grant, None)
        self._send(200)

    def lfs_verify(self, t, q):
        self._require_write_access()
        payload = self._json_body()
        if not self.server.store.has_blob(payload.get("oid", ""), payload.get("size")):
            raise HubError(404, f"LFS object {payload.get('oid')} was not uploaded (or has another size)")
        self._send_json({"message": "verified"})

    def create_commit(self, t, q):
        self._require_write_access()
        repo, branch = t.repo, t.revision
        header, additions, deletions = {}, {}, []
        for line in self._body().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                header = value
            elif key == "file":
                content = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else value[
                    "content"
                ].encode()
                path = check_repo_path(value["path"])
                additions[path] = {"sha256": self.server.store.put_blob(content), "size": len(content),
                                   "lfs": False}
            elif key == "lfsFile":
                if value.get("algo", "sha256") != "sha256":
                    raise HubError(400, "Only sha256 LFS objects are supported")
                additions[check_repo_path(value["path"])] = {"sha256": value["oid"], "size": int(value["size"]),
                                                             "lfs": True}
            elif key in ("deletedFile", "deletedFolder"):
                deletions.append(value["path"])
            else:
                raise HubError(400, f"Unsupported commit operation {key!r}")
        commit = self.server.store.commit(repo, branch, additions, deletions, header.get("summary", ""),
                                          header.get("description", ""), header.get("parentCommit"))
        url = f"{self.server.endpoint}/{TYPE_TO_PREFIX[repo.repo_type]}{repo.id}"
        self._send_json({"commitOid": commit["id"], "commitUrl": f"{url}/commit/{commit['id']}",
                         "pullRequestUrl": None})

    def repo_info(self, t, q):
        repo = t.repo
        commit = self.server.store.resolve(repo, t.revision)
        date = datetime.fromtimestamp(commit["date"], tz=timezone.utc).isoformat().replace("+00:00", "Z")
        siblings = [
            {"rfilename": path, "size": e["size"], "blobId": e["git_oid"],
             **({"lfs": lfs_info(e, oid_key="sha256")} if e["lfs"] else {})}
            for path, e in commit["files"].items()
        ]
        self._send_json({"id": repo.id, "modelId": repo.id, "author": repo.namespace, "sha": commit["id"],
                         "lastModified": date, "createdAt": date, "private": False, "disabled": False,
                         "gated": False, "tags": [], "downloads": 0, "likes": 0, "siblings": siblings})

    def tree(self, t, q):
        repo, revision = t.repo, t.revision
        folder = t.path.strip("/")
        if folder:
            check_repo_path(folder)
        recursive = (q.get("recursive") or ["false"])[0].lower() == "true"
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
        commit, entry = self.server.store.file_entry(t.repo, t.revision, t.path)
        headers = {"X-Repo-Commit": commit["id"], "Accept-Ranges": "bytes", "ETag": f'"{entry["git_oid"]}"'}
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{entry["sha256"]}"', "X-Linked-Size": str(entry["size"])})
        content = b"" if head else self.server.store.read_blob(entry["sha256"])
        status, body = 200, content
        byte_range = self.headers.get("Range", "")
        if byte_range.startswith("bytes=") and not head:
            start_text, _, end_text = byte_range[len("bytes="):].partition("-")
            start = int(start_text or 0)
            end = min(int(end_text), len(content) - 1) if end_text else len(content) - 1
            status, body = 206, content[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
        # HEAD answers with the full size, as GET would
        self._send(status, body, content_type="application/octet-stream", headers=headers, head=head,
                   length=entry["size"] if head else None)


def serve(root: str, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> LocalHub:
    """A server bound to (host, port) (port 0: a free one); call serve_forever() on it, or run it in a thread."""
    return LocalHub((host, port), HubStore(root), token=token)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="folder that holds the repositories (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", default=None, help="refuse writes without `Authorization: Bearer TOKEN`")
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
