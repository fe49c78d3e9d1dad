"""On-disk storage of a local Hub: repositories as chains of commits over a content-addressed blob store.

Layout under the root:
    blobs/<sha256>                          file contents (regular and LFS alike), written once, never changed
    <type>s/<namespace>/<name>/refs.json    branch name → commit id
    <type>s/<namespace>/<name>/commits/<id>.json
        {"id", "parent", "summary", "description", "date", "files": {path: {"sha256", "size", "lfs", "git_oid"}}}
Every commit is a full snapshot, so old revisions stay readable. Paths inside repositories are checked before
they are used, and nothing is read through a symbolic link or from outside the root.
"""

import hashlib
import json
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO_TYPES = ("model", "dataset", "space")
# matched whole (fullmatch): `$` would also match before a final newline
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
COMMIT_ID = re.compile(r"[0-9a-f]{40}")
SHA256 = re.compile(r"[0-9a-f]{64}")
# files at least this large, or with these extensions, go through LFS, as on the Hub
LFS_MIN_SIZE = 10 * 1024 * 1024
LFS_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".arrow", ".parquet",
                  ".npy", ".npz", ".zip", ".gz", ".tar", ".model")


class StoreError(Exception):
    """A storage error; `code` names it for clients (the Hub's X-Error-Code) where they read one."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.message, self.code = message, code


class InvalidInput(StoreError):
    """A path, repository id, hash or content that the store refuses."""


class NotFound(StoreError):
    """A repository, revision, file or blob that is not there."""


class Forbidden(StoreError):
    """A path outside the store or behind a symbolic link."""


class Conflict(StoreError):
    """A commit whose parent is no longer the head of its branch."""


class MissingContent(StoreError):
    """A commit that names content the blob store does not hold."""


def check_repo_path(path: str) -> str:
    """A file path inside a repository: relative, '/'-separated, without '.', '..' or empty parts."""
    if not path or len(path) > 1000 or "\\" in path or "\x00" in path or path.startswith("/"):
        raise InvalidInput(f"Invalid path in repository: {path!r}", "InvalidPath")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidInput(f"Invalid path in repository: {path!r} (no '.', '..' or empty parts)", "InvalidPath")
    return path


def check_no_file_is_a_folder(paths) -> None:
    """A snapshot in which `a` is a file cannot also hold `a/b` (no checkout or download could write both)."""
    paths = set(paths)
    for path in paths:
        parts = path.split("/")
        clash = next(("/".join(parts[:i]) for i in range(1, len(parts)) if "/".join(parts[:i]) in paths), None)
        if clash is not None:
            raise InvalidInput(f"Cannot commit {path!r}: {clash!r} is a file in this revision, not a folder. Delete "
                               f"{clash!r} in the same commit, or choose another path.", "InvalidPath")


def uses_lfs(path: str, size: int) -> bool:
    return size >= LFS_MIN_SIZE or path.lower().endswith(LFS_EXTENSIONS)


def git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class RepoId:
    repo_type: str
    namespace: str
    name: str

    def __post_init__(self):
        if self.repo_type not in REPO_TYPES:
            raise InvalidInput(f"Unknown repo type {self.repo_type!r}; one of {', '.join(REPO_TYPES)}")
        for part in (self.namespace, self.name):
            if not NAME.fullmatch(part) or part.endswith(".git"):
                raise InvalidInput(f"Invalid repo id {self.namespace}/{self.name}", "InvalidRepoId")

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"


class HubStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------- safe disk access

    def _inside(self, path: Path) -> Path:
        """`path` if it lies inside the root and is no symbolic link (nor reached through one)."""
        if path.is_symlink() or not os.path.realpath(path).startswith(str(self.root) + os.sep):
            raise Forbidden(f"Refusing to read {path.name}: outside the store or a symbolic link", "Forbidden")
        return path

    def _write_atomic(self, path: Path, data: bytes):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def _repo_dir(self, repo: RepoId) -> Path:
        return self.root / f"{repo.repo_type}s" / repo.namespace / repo.name

    # ------------------------------------------------------------------------------------------------------ blobs

    def blob_path(self, sha256: str) -> Path:
        if not SHA256.fullmatch(sha256):
            raise InvalidInput(f"Invalid sha256 {sha256!r}")
        path = self.root / "blobs" / sha256
        return self._inside(path) if path.exists() else path

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        path = self.blob_path(sha256)
        return path.exists() and (size is None or path.stat().st_size == size)

    def put_blob(self, content: bytes, expected_sha256: str | None = None) -> str:
        return self.put_blob_stream([content], expected_sha256)

    def put_blob_stream(self, chunks, expected_sha256: str | None = None) -> str:
        """Stores content given as an iterable of byte chunks (an upload read piece by piece), hashing it on the
        way to a temporary file; it appears under its sha256 only when complete and as announced."""
        if expected_sha256 is not None:
            self.blob_path(expected_sha256)  # a malformed oid is refused before anything is read
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=self.root / "blobs", prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    digest.update(chunk)
                    f.write(chunk)
            sha256 = digest.hexdigest()
            if expected_sha256 is not None and sha256 != expected_sha256:
                raise InvalidInput(f"Content hash {sha256} does not match the announced oid {expected_sha256}")
            path = self.blob_path(sha256)
            if not path.exists():
                os.replace(tmp, path)
            return sha256
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def read_blob(self, sha256: str) -> bytes:
        return self.blob_file(sha256).read_bytes()

    def blob_file(self, sha256: str) -> Path:
        """The file that holds a blob, to stream from (checked: inside the store, no symbolic link)."""
        path = self.blob_path(sha256)
        if not path.exists():
            raise NotFound(f"Blob {sha256} is missing from the store", "EntryNotFound")
        return self._inside(path)

    # ------------------------------------------------------------------------------------------------------ repos

    def exists(self, repo: RepoId) -> bool:
        return (self._repo_dir(repo) / "refs.json").exists()

    def create(self, repo: RepoId, private: bool = False) -> bool:
        """Creates an empty repository with one initial commit on main; False if it already existed."""
        with self._lock:
            if self.exists(repo):
                return False
            self._write_atomic(self._repo_dir(repo) / "settings.json", json.dumps({"private": private}).encode())
            self._commit_locked(repo, "main", {}, "initial commit", "")
            return True

    def is_private(self, repo: RepoId) -> bool:
        """Whether the repository was created private (one created before this was recorded is public)."""
        path = self._repo_dir(repo) / "settings.json"
        return path.exists() and bool(json.loads(self._inside(path).read_text()).get("private"))

    def refs(self, repo: RepoId) -> dict[str, str]:
        path = self._repo_dir(repo) / "refs.json"
        if not path.exists():
            raise NotFound(f"Repository {repo.id} not found", "RepoNotFound")
        return json.loads(self._inside(path).read_text())

    def resolve(self, repo: RepoId, revision: str) -> dict:
        """The commit a branch name or a commit id points to."""
        refs = self.refs(repo)
        commit_id = refs.get(revision) or (revision if COMMIT_ID.fullmatch(revision) else None)
        path = self._repo_dir(repo) / "commits" / f"{commit_id}.json"
        if commit_id is None or not path.exists():
            raise NotFound(f"Revision {revision!r} not found in {repo.id}", "RevisionNotFound")
        return json.loads(self._inside(path).read_text())

    def commit(self, repo: RepoId, branch: str, additions: dict[str, dict], deletions: list[str], summary: str,
               description: str, parent: str | None = None) -> dict:
        """A new commit on `branch`: the branch head's files, minus `deletions` (files or folders), plus
        `additions` ({path: {"sha256", "size", "lfs"}}, contents already in the blob store)."""
        with self._lock:
            if branch not in self.refs(repo) and COMMIT_ID.fullmatch(branch):
                raise InvalidInput(f"Cannot commit onto {branch}: it is a commit id, and a commit never changes. Commit "
                                   "onto a branch (revision='main', or a branch made with create_branch).",
                                   "InvalidRevision")
            head = self.resolve(repo, branch)
            if parent and parent != head["id"]:
                raise Conflict(f"parentCommit {parent} is not the head of {branch} ({head['id']})")
            files = dict(head["files"])
            for path in deletions:
                check_repo_path(path.rstrip("/"))
                prefix = path.rstrip("/") + "/"
                removed = [p for p in files if p == path or p.startswith(prefix)]
                if not removed:
                    raise NotFound(f"Cannot delete {path!r}: no such file in {repo.id}", "EntryNotFound")
                for p in removed:
                    del files[p]
            for path, entry in additions.items():
                check_repo_path(path)
                if not self.has_blob(entry["sha256"], entry["size"]):
                    raise MissingContent(f"The content of {path} was not uploaded (sha256 {entry['sha256']})")
                files[path] = entry
            check_no_file_is_a_folder(files)
            return self._commit_locked(repo, branch, files, summary, description, head["id"])

    def _commit_locked(self, repo, branch, files, summary, description, parent=None) -> dict:
        for path, entry in files.items():
            if "git_oid" not in entry:
                content = lfs_pointer(entry["sha256"], entry["size"]) if entry["lfs"] else self.read_blob(
                    entry["sha256"]
                )
                files[path] = {**entry, "git_oid": git_blob_oid(content)}
        body = {"parent": parent, "summary": summary, "description": description, "date": time.time(),
                "files": dict(sorted(files.items()))}
        commit_id = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()
        commit = {"id": commit_id, **body}
        repo_dir = self._repo_dir(repo)
        self._write_atomic(repo_dir / "commits" / f"{commit_id}.json", json.dumps(commit, indent=1).encode())
        refs = json.loads((repo_dir / "refs.json").read_text()) if (repo_dir / "refs.json").exists() else {}
        refs[branch] = commit_id
        self._write_atomic(repo_dir / "refs.json", json.dumps(refs, indent=1).encode())
        return commit

    def file_entry(self, repo: RepoId, revision: str, path: str) -> tuple[dict, dict]:
        """(commit, entry) of `path` at `revision`."""
        check_repo_path(path)
        commit = self.resolve(repo, revision)
        entry = commit["files"].get(path)
        if entry is None:
            raise NotFound(f"{path} not found in {repo.id} at {revision}", "EntryNotFound")
        return commit, entry
