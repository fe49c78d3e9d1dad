"""Sharing on the Hub, against the local Hub server over real HTTP on 127.0.0.1: push, load by repo id without
the package, revisions, pipeline, model card, and the server's refusals."""

import http.client
import json
import subprocess
import sys
import textwrap
import threading

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

from helpers import (
    SENTENCES, TINY, client_env, load_revisions_without_package, load_without_package, run_training, tiny_model,
    tiny_run_config,
)
from hub.server import serve
from hub.store import RepoId


def start_server(root, token=None):
    server = serve(str(root), port=0, token=token)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("hub-root"))
    yield server
    server.shutdown()
    server.server_close()


def hub_env(hub) -> dict:
    return {"HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": "local", "HF_HUB_OFFLINE": "0"}


PUSHER = textwrap.dedent(
    """
    import sys, torch
    from modeling_fusion_lstm import FusionLSTMForCausalLM, load_tokenizer
    repo, seeds, sizes = sys.argv[1], sys.argv[2].split(","), eval(sys.argv[3])
    load_tokenizer().push_to_hub(repo)
    for seed in seeds:  # one revision each
        torch.manual_seed(int(seed))
        model = FusionLSTMForCausalLM.from_encoder_pretrained(fusion="concat", **sizes)
        print("COMMIT", model.push_to_hub(repo).oid)
    """
)


def push_models(hub, tmp_path, repo_id, seeds: list[int]) -> list[str]:
    """model.push_to_hub from a client process, a tiny model of each seed in turn; returns the commit ids."""
    result = subprocess.run([sys.executable, "-c", PUSHER, repo_id, ",".join(map(str, seeds)), repr(TINY)],
                            cwd=tmp_path, env=client_env(tmp_path, **hub_env(hub)), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    commits = [line.split("COMMIT ", 1)[1].strip() for line in result.stdout.splitlines() if line.startswith("COMMIT ")]
    assert len(commits) == len(seeds), result.stdout[-3000:]
    return commits


@pytest.fixture(scope="module")
def pushed_run(hub, tmp_path_factory):
    """run_clm.py --push_to_hub of a tiny trained model."""
    tmp_path = tmp_path_factory.mktemp("push-run")
    config = tiny_run_config(tmp_path / "out", tmp_path / "cache", push_to_hub=True, hub_model_id="alice/tiny-run")
    run_training(config, tmp_path, env=hub_env(hub))
    return tmp_path / "out"


def test_trained_model_pushed_by_run_clm_loads_by_repo_id_without_the_package(hub, pushed_run, tokenizer, tmp_path):
    files = set(HfApi(endpoint=hub.endpoint).list_repo_files("alice/tiny-run"))
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "modeling_fusion_lstm.py", "configuration_fusion_lstm.py", "README.md"} <= files
    assert not any(f.endswith(".bin") or f.startswith(("runs/", "checkpoint-")) for f in files)

    from modeling_fusion_lstm import FusionLSTMForCausalLM

    local = FusionLSTMForCausalLM.from_pretrained(pushed_run).eval()
    inputs = dict(tokenizer(SENTENCES, return_tensors="pt", padding=True))
    outputs, report = load_without_package("alice/tiny-run", inputs, tmp_path, **hub_env(hub))
    assert report["class"].startswith("transformers_modules.") and report["frozen"]
    mask = inputs["attention_mask"].bool()
    with torch.no_grad():
        expected = local(**inputs).logits
    torch.testing.assert_close(outputs["logits"][mask], expected[mask], rtol=0, atol=1e-6)


def test_model_card_metadata_parses_and_carries_the_perplexity(hub, pushed_run, tmp_path):
    readme = hf_hub_download("alice/tiny-run", "README.md", endpoint=hub.endpoint, cache_dir=tmp_path)
    card = ModelCard.load(readme)
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert data["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and data["license"]
    assert "fusion-concat" in data["tags"]
    results = json.loads((pushed_run / "all_results.json").read_text())
    metric = data["model-index"][0]["results"][0]["metrics"][0]
    assert metric["type"] == "perplexity" and metric["value"] == round(results["eval_perplexity"], 4)
    # the prose carries this model's numbers and settings (not checked word for word)
    from modeling_fusion_lstm import FUSIONS, FusionLSTMForCausalLM

    model = FusionLSTMForCausalLM.from_pretrained(pushed_run)
    lm_parameters = model.num_lm_parameters()
    assert f"{lm_parameters:,}" in card.text and f"{model.num_parameters() - lm_parameters:,}" in card.text
    assert FUSIONS["concat"].description in card.text and "trust_remote_code=True" in card.text
    assert f"{results['eval_perplexity']:.2f}" in card.text


def test_second_revision_leaves_the_first_loadable(hub, tokenizer, tmp_path):
    first, second = push_models(hub, tmp_path, "alice/revisions", [0, 1])
    assert first != second
    inputs = dict(tokenizer(SENTENCES[:1], return_tensors="pt"))
    revisions = {first: 0, second: 1, "": 1}  # "": the default branch, the second push
    loaded = load_revisions_without_package("alice/revisions", inputs, tmp_path, list(revisions), **hub_env(hub))
    for (revision, seed), (outputs, _) in zip(revisions.items(), loaded):
        with torch.no_grad():
            expected = tiny_model("concat", seed=seed)(**inputs).logits
        torch.testing.assert_close(outputs["logits"], expected, rtol=0, atol=1e-6, msg=f"revision {revision}")


def test_pipeline_by_repo_id(hub, tokenizer, tmp_path):
    push_models(hub, tmp_path, "alice/for-pipeline", [0])
    script = textwrap.dedent(
        """
        from transformers import pipeline
        generator = pipeline("text-generation", model="alice/for-pipeline", trust_remote_code=True)
        print("TEXT", generator("The cat", max_new_tokens=5, do_sample=False, return_full_text=False)[0]["generated_text"])
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=client_env(tmp_path, **hub_env(hub)),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with torch.no_grad():
        ids = tiny_model("concat", seed=0).generate(**tokenizer(["The cat"], return_tensors="pt"), max_new_tokens=5,
                                                    do_sample=False)
    expected = tokenizer.decode(ids[0, 3:], skip_special_tokens=True)
    assert result.stdout.split("TEXT ", 1)[1].strip() == expected.strip()


def test_missing_repo_file_and_revision_raise_huggingface_hub_errors(hub, tmp_path):
    api = HfApi(endpoint=hub.endpoint)
    api.create_repo("alice/errors", exist_ok=True)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/nope", "config.json", endpoint=hub.endpoint, cache_dir=tmp_path)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("alice/errors", "config.json", endpoint=hub.endpoint, cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("alice/errors", "README.md", revision="v9", endpoint=hub.endpoint, cache_dir=tmp_path)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/nope")


# ------------------------------------------------------------------------------------------- raw HTTP refusals


def request(server, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, dict(response.headers), payload


def commit_body(path: str) -> bytes:
    lines = [{"key": "header", "value": {"summary": "evil"}},
             {"key": "file", "value": {"path": path, "content": "aGk=", "encoding": "base64"}}]
    return "\n".join(json.dumps(line) for line in lines).encode()


@pytest.mark.parametrize("path", ["../escape.txt", "a/../../escape.txt", "/etc/passwd", "a//b", "a\\..\\b", "./x"])
def test_paths_that_escape_the_repository_are_rejected(hub, path):
    HfApi(endpoint=hub.endpoint).create_repo("alice/paths", exist_ok=True)
    status, headers, _ = request(hub, "POST", "/api/models/alice/paths/commit/main", commit_body(path),
                                 {"Content-Type": "application/x-ndjson"})
    assert status == 400 and headers["X-Error-Code"] == "InvalidPath"
    status, _, _ = request(hub, "GET", "/alice/paths/resolve/main/..%2F..%2Fblobs")
    assert status == 400


def test_blobs_reached_through_a_symlink_are_refused(tmp_path):
    root = tmp_path / "root"
    server = start_server(root)
    try:
        api = HfApi(endpoint=server.endpoint)
        api.create_repo("alice/links")
        status, _, _ = request(server, "POST", "/api/models/alice/links/commit/main", commit_body("hello.txt"),
                               {"Content-Type": "application/x-ndjson"})
        assert status == 200
        blob = next((root / "blobs").iterdir())
        secret = tmp_path / "secret.txt"
        secret.write_text("TOP SECRET")
        blob.unlink()
        blob.symlink_to(secret)
        status, _, body = request(server, "GET", "/alice/links/resolve/main/hello.txt")
        assert status == 403 and b"TOP SECRET" not in body
    finally:
        server.shutdown()
        server.server_close()


def test_writes_need_the_token_and_repositories_survive_a_restart(tmp_path):
    root = tmp_path / "root"
    server = start_server(root, token="s3cret")
    try:
        status, _, _ = request(server, "POST", "/api/repos/create", json.dumps({"name": "x", "organization": "bob"}))
        assert status == 401
        HfApi(endpoint=server.endpoint, token="s3cret").create_repo("bob/kept")
        status, _, _ = request(server, "POST", "/api/models/bob/kept/commit/main", commit_body("kept.txt"),
                               {"Authorization": "Bearer s3cret"})
        assert status == 200
    finally:
        server.shutdown()
        server.server_close()
    restarted = start_server(root)
    try:
        path = hf_hub_download("bob/kept", "kept.txt", endpoint=restarted.endpoint, cache_dir=tmp_path / "cache")
        assert open(path).read() == "hi"
    finally:
        restarted.shutdown()
        restarted.server_close()


def test_server_binds_loopback_by_default(hub):
    assert hub.server_address[0] == "127.0.0.1"


# ------------------------------------------------------------------------------------------------ hardening


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A token-protected server with one repository holding hello.txt ("hello world")."""
    server = start_server(tmp_path_factory.mktemp("guarded-root"), token="SECRET")
    HfApi(endpoint=server.endpoint, token="SECRET").create_repo("carol/box")
    lines = [{"key": "header", "value": {"summary": "add"}},
             {"key": "file", "value": {"path": "hello.txt", "content": "aGVsbG8gd29ybGQ=", "encoding": "base64"}}]
    status, _, _ = request(server, "POST", "/api/models/carol/box/commit/main",
                           "\n".join(map(json.dumps, lines)).encode(), {"Authorization": "Bearer SECRET"})
    assert status == 200
    yield server
    server.shutdown()
    server.server_close()


def test_a_rejected_request_does_not_spoil_the_keep_alive_connection(guarded):
    connection = http.client.HTTPConnection(*guarded.server_address[:2], timeout=30)
    try:
        connection.request("POST", "/api/models/carol/box/commit/main", commit_body("x.txt"),
                           {"Authorization": "Bearer WRONG"})
        response = connection.getresponse()
        response.read()
        assert response.status == 401
        connection.request("GET", "/api/models/carol/box")  # the same client, the same connection object
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["id"] == "carol/box"
    finally:
        connection.close()


def test_a_rejected_commit_then_a_valid_call_from_one_hf_client(guarded, tmp_path):
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    (tmp_path / "f.txt").write_text("data")
    with pytest.raises(HfHubHTTPError):
        HfApi(endpoint=guarded.endpoint, token="WRONG").create_commit(
            "carol/box", [CommitOperationAdd("f.txt", str(tmp_path / "f.txt"))], commit_message="nope")
    assert HfApi(endpoint=guarded.endpoint, token="SECRET").model_info("carol/box").id == "carol/box"


def test_oversized_bodies_are_refused_without_being_read(guarded):
    from hub.server import MAX_JSON_BODY

    status, headers, _ = request(guarded, "POST", "/api/validate-yaml", None,
                                 {"Content-Length": str(20 * 1024**3)})
    assert status == 413 and headers.get("Connection") == "close"

    def chunks():  # a chunked body past the cap, never announced in advance
        piece = b"x" * 1024**2
        for _ in range(MAX_JSON_BODY // len(piece) + 2):
            yield piece

    connection = http.client.HTTPConnection(*guarded.server_address[:2], timeout=30)
    try:
        connection.request("POST", "/api/validate-yaml", chunks(), encode_chunked=True)
        assert connection.getresponse().status == 413
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may close while the client still sends: refused all the same
    finally:
        connection.close()


@pytest.mark.parametrize("line, detail", [
    (b"not json", "commit line 1"),
    (b'{"key": "file", "value": {"path": "a.txt"}}', "content"),
    (b'{"key": "file", "value": {"path": "a.txt", "content": "%%%", "encoding": "base64"}}', "commit line 1"),
    (b'{"key": "lfsFile", "value": {"path": "a.bin", "oid": "00", "size": "big"}}', "commit line 1"),
    (b'{"key": "header", "value": 7}', "commit line 1"),
    (b'{"value": {}}', "key"),
])
def test_malformed_commits_get_400_and_commit_nothing(guarded, line, detail):
    before = HfApi(endpoint=guarded.endpoint).model_info("carol/box").sha
    status, headers, body = request(guarded, "POST", "/api/models/carol/box/commit/main", line,
                                    {"Authorization": "Bearer SECRET"})
    assert status == 400 and detail in json.loads(body)["error"]
    assert HfApi(endpoint=guarded.endpoint).model_info("carol/box").sha == before


@pytest.mark.parametrize("path, body", [
    ("/api/models/carol/box/preupload/main", b'{"files": [{"size": 3}]}'),
    ("/api/models/carol/box/preupload/main", b'{"files": 5}'),
    ("/carol/box.git/info/lfs/objects/batch", b'{"operation": "upload", "objects": [{"oid": "ab"}]}'),
    ("/lfs/verify/model/carol/box", b'{"size": 3}'),
])
def test_malformed_json_requests_get_400(guarded, path, body):
    status, _, _ = request(guarded, "POST", path, body, {"Authorization": "Bearer SECRET"})
    assert status == 400


@pytest.mark.parametrize("value, status, content", [
    ("bytes=-2", 206, b"ld"), ("bytes=0-4", 206, b"hello"), ("bytes=6-", 206, b"world"), ("bytes=6-100", 206, b"world"),
    ("bytes=3-1", 416, None), ("bytes=100-", 416, None), ("bytes=-0", 416, None), ("bytes=a-b", 400, None),
    ("items=0-1", 400, None),
])
def test_byte_ranges(guarded, value, status, content):
    got, headers, body = request(guarded, "GET", "/carol/box/resolve/main/hello.txt", headers={"Range": value})
    assert got == status
    if content is not None:
        assert body == content
    if status == 416:
        assert headers["Content-Range"] == "bytes */11"


def test_a_malformed_content_length_gets_400(guarded):
    import socket

    with socket.create_connection(guarded.server_address[:2], timeout=30) as sock:
        sock.sendall(b"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n{}")
        assert sock.recv(1024).split(b" ")[1] == b"400"


def test_lfs_links_use_the_address_the_client_used(guarded):
    host = f"localhost:{guarded.server_address[1]}"
    oid = "a" * 64
    status, _, body = request(guarded, "POST", "/carol/box.git/info/lfs/objects/batch",
                              json.dumps({"operation": "upload", "objects": [{"oid": oid, "size": 3}]}),
                              {"Authorization": "Bearer SECRET", "Host": host})
    actions = json.loads(body)["objects"][0]["actions"]
    assert status == 200 and actions["upload"]["href"].startswith(f"http://{host}/lfs/upload/{oid}?grant=")


def test_the_store_raises_its_own_errors(tmp_path):
    from hub.store import HubStore, InvalidInput, NotFound, RepoId, StoreError

    store = HubStore(tmp_path)
    with pytest.raises(NotFound):
        store.refs(RepoId("model", "dave", "nothing"))
    with pytest.raises(InvalidInput):
        store.put_blob(b"abc", expected_sha256="0" * 64)
    assert issubclass(NotFound, StoreError) and not hasattr(NotFound("x"), "status")
    assert not list((tmp_path / "blobs").iterdir())  # a refused upload leaves nothing behind


# ------------------------------------------------------------------------------------------------ hardening, round 2


def raw_exchange(server, data: bytes, timeout=10) -> bytes:
    """Sends `data` on a new connection and reads until the server closes it."""
    import socket

    with socket.create_connection(server.server_address[:2], timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_request_text_never_reaches_a_header_and_control_characters_get_400(guarded):
    answer = raw_exchange(guarded, b"GET /carol/box/resolve/main/x%0D%0ASet-Cookie:%20evil=1%0D%0A%0D%0AHTTP/1.1%20200"
                                   b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = answer.split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 400") and b"Set-Cookie" not in head
    assert answer.count(b"HTTP/1.1 ") == 1  # no second, forged response
    status, headers, _ = request(guarded, "GET", "/carol/box/resolve/main/missing%E2%9C%93.txt")
    assert status == 404 and all(32 <= ord(c) < 127 for c in headers["X-Error-Message"])


def test_private_repositories_are_stored_reported_and_hidden_without_the_token(guarded):
    owner = HfApi(endpoint=guarded.endpoint, token="SECRET")
    owner.create_repo("carol/secret", private=True)
    lines = [{"key": "header", "value": {"summary": "add"}},
             {"key": "file", "value": {"path": "plan.txt", "content": "Y2xhc3NpZmllZA==", "encoding": "base64"}}]
    assert request(guarded, "POST", "/api/models/carol/secret/commit/main", "\n".join(map(json.dumps, lines)).encode(),
                   {"Authorization": "Bearer SECRET"})[0] == 200
    assert owner.model_info("carol/secret").private is True
    assert HfApi(endpoint=guarded.endpoint).model_info("carol/box").private is False
    for path in ("/api/models/carol/secret", "/api/models/carol/secret/tree/main",
                 "/carol/secret/resolve/main/plan.txt"):
        status, headers, _ = request(guarded, "GET", path)
        assert status == 404 and headers["X-Error-Code"] == "RepoNotFound", path
    status, _, body = request(guarded, "GET", "/carol/secret/resolve/main/plan.txt",
                              headers={"Authorization": "Bearer SECRET"})
    assert status == 200 and body == b"classified"


def test_silent_connections_and_stalled_bodies_time_out_and_connections_are_capped(tmp_path):
    import socket

    server = serve(str(tmp_path), port=0, timeout=5, max_connections=2)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # a body shorter than its Content-Length: answered 408 when the wait runs out, then closed
        answer = raw_exchange(server, b"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        assert answer.startswith(b"HTTP/1.1 408")
        # two silent connections fill the server; a third is turned away; once they time out, it serves again
        pause = threading.Event()

        def free_slots(count: int):  # the server's threads release and take slots a moment after the sockets move
            for _ in range(300):
                if server.slots._value == count:
                    return
                pause.wait(0.01)
            raise AssertionError(f"the server holds {2 - server.slots._value} connections, not {2 - count}")

        free_slots(2)  # the 408 connection's thread has ended
        idle = [socket.create_connection(server.server_address[:2], timeout=10) for _ in range(2)]
        try:
            for sock in idle:
                sock.sendall(b"G")  # accepted and in a handler thread, which waits for the rest
            free_slots(0)
            assert raw_exchange(server, b"GET /api/whoami-v2 HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 503")
            assert all(sock.recv(1024) == b"" for sock in idle)  # closed by the server after 5 s of silence
        finally:
            for sock in idle:
                sock.close()
        assert request(server, "GET", "/api/whoami-v2")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_a_json_list_gets_400_and_an_early_disconnect_no_traceback(guarded, caplog):
    status, _, body = request(guarded, "POST", "/api/repos/create", b'["carol", "list"]',
                              {"Authorization": "Bearer SECRET"})
    assert status == 400 and "must be an object" in json.loads(body)["error"]
    import socket

    with caplog.at_level("INFO", logger="hub.server"):
        with socket.create_connection(guarded.server_address[:2], timeout=10) as sock:
            sock.sendall(b"GET /carol/box/resolve/main/hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        assert request(guarded, "GET", "/api/models/carol/box")[0] == 200
    assert not any(record.exc_info for record in caplog.records)


def test_a_range_of_a_large_file_is_streamed_from_disk(guarded, tmp_path):
    import tracemalloc

    from hub.store import RepoId

    content = bytes(range(256)) * (32 * 1024**2 // 256)  # 32 MiB, committed to the store as an LFS file would be
    sha256 = guarded.store.put_blob(content)
    guarded.store.commit(RepoId("model", "carol", "box"), "main", {"big.bin": {"sha256": sha256, "size": len(content),
                                                                              "lfs": True}}, [], "big", "")
    del content
    tracemalloc.start()
    try:
        status, _, body = request(guarded, "GET", "/carol/box/resolve/main/big.bin",
                                  headers={"Range": "bytes=1000-1003"})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert status == 206 and body == bytes([1000 % 256, 1001 % 256, 1002 % 256, 1003 % 256])
    assert peak < 8 * 1024**2  # the server thread did not read the 32 MiB into memory


# ------------------------------------------------------------------------------------------------ hardening, round 3


def test_a_request_dripped_byte_by_byte_is_cut_at_its_deadline(tmp_path):
    """A client that sends one header byte at a time, never silent for the silence timeout, is still cut off when
    the whole request is not in by its deadline: it cannot hold a slot for ever."""
    import select
    import socket

    server = serve(str(tmp_path), port=0, timeout=5, request_deadline=1.5)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    request_text = b"GET /api/whoami-v2 HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200
    try:
        with socket.create_connection(server.server_address[:2], timeout=10) as sock:
            sent = 0
            for byte in request_text:  # one byte every 0.25 s: never 5 s of silence
                sock.sendall(bytes([byte]))
                sent += 1
                readable, _, _ = select.select([sock], [], [], 0.25)
                if readable and sock.recv(1024) == b"":
                    break
            # closed by the server long before the request was complete (it would take 50 s)
            assert sent < len(request_text) // 2
        assert request(server, "GET", "/api/whoami-v2")[0] == 200  # and a normal request is served
    finally:
        server.shutdown()
        server.server_close()


def test_control_characters_of_a_request_reach_the_log_escaped(guarded, caplog):
    with caplog.at_level("INFO", logger="hub.server"):
        raw_exchange(guarded, b"GET /\x1b[2J\x1b[31mred\x07 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "\\x1b[2J" in logged and "\x1b" not in logged and "\x07" not in logged


def test_an_authorization_header_beyond_ascii_gets_401_not_500(guarded):
    answer = raw_exchange(guarded, b"POST /api/repos/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer S\xe9CRET\r\n"
                                   b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.1 401")
    answer = raw_exchange(guarded, b"GET /api/models/carol/box HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\n"
                                   b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")


def test_a_bad_repo_id_or_token_for_push_to_hub_is_refused_before_training(guarded, tmp_path):
    import re

    for hub_model_id, token, message in (("alice/bad id!", "SECRET", r"'alice/bad id!' is not a repository id"),
                                         ("alice/tiny", "WRONG", r"refuses the token \(HTTP 401\)")):
        out = tmp_path / hub_model_id.replace("/", "_").replace(" ", "_")
        config = tiny_run_config(out, tmp_path / "cache", push_to_hub=True, hub_model_id=hub_model_id)
        result = run_training(config, tmp_path, check=False, env={**hub_env(guarded), "HF_TOKEN": token})
        assert result.returncode != 0 and re.search(message, result.log), result.log[-2000:]
        assert "Prefix embeddings" not in result.log and not (out / "config.json").exists()  # nothing was trained


# ------------------------------------------------------------------------------------------------ hardening, round 4


def test_a_commit_id_is_immutable_and_never_becomes_a_branch(hub, tmp_path):
    api = HfApi(endpoint=hub.endpoint, token="local")
    api.create_repo("erin/fixed", exist_ok=True)
    first = api.upload_file(path_or_fileobj=b"one", path_in_repo="a.txt", repo_id="erin/fixed").oid
    api.upload_file(path_or_fileobj=b"two", path_in_repo="a.txt", repo_id="erin/fixed")
    status, headers, _ = request(hub, "POST", f"/api/models/erin/fixed/commit/{first}", commit_body("a.txt"),
                                 {"Content-Type": "application/x-ndjson"})
    assert status == 400 and "is a commit id" in headers["X-Error-Message"]
    refs = json.loads((hub.store.root / "models" / "erin" / "fixed" / "refs.json").read_text())
    assert list(refs) == ["main"]
    old = hf_hub_download("erin/fixed", "a.txt", revision=first, endpoint=hub.endpoint, cache_dir=tmp_path)
    assert open(old, "rb").read() == b"one"


@pytest.mark.parametrize("payload", [{"name": "nl\n"}, {"name": "nl", "organization": "me\n"}])
def test_a_repo_name_with_a_trailing_newline_is_refused(hub, payload):
    status, headers, _ = request(hub, "POST", "/api/repos/create", json.dumps(payload).encode())
    assert status == 400 and headers["X-Error-Code"] == "InvalidRepoId"
    assert not any("\n" in p.name for p in hub.store.root.rglob("*"))


def test_a_commit_url_with_a_path_after_the_revision_is_not_a_commit(hub):
    HfApi(endpoint=hub.endpoint).create_repo("erin/urls", exist_ok=True)
    before = hub.store.resolve(RepoId("model", "erin", "urls"), "main")["id"]
    for path in ("/api/models/erin/urls/commit/main/..", "/api/models/erin/urls/commit/main/x"):
        status, _, _ = request(hub, "POST", path, commit_body("evil.txt"), {"Content-Type": "application/x-ndjson"})
        assert status == 404, path
    assert hub.store.resolve(RepoId("model", "erin", "urls"), "main")["id"] == before


def test_a_file_and_a_folder_of_one_name_cannot_share_a_snapshot(hub):
    HfApi(endpoint=hub.endpoint).create_repo("erin/clash", exist_ok=True)
    assert request(hub, "POST", "/api/models/erin/clash/commit/main", commit_body("clash"))[0] == 200
    status, headers, _ = request(hub, "POST", "/api/models/erin/clash/commit/main", commit_body("clash/inner.txt"))
    assert status == 400 and "'clash' is a file in this revision" in headers["X-Error-Message"]
    status, _, _ = request(hub, "POST", "/api/models/erin/clash/commit/main", "\n".join(json.dumps(line) for line in [
        {"key": "header", "value": {"summary": "folder now"}}, {"key": "deletedFile", "value": {"path": "clash"}},
        {"key": "file", "value": {"path": "clash/inner.txt", "content": "aGk=", "encoding": "base64"}}]).encode())
    assert status == 200  # replacing the file by a folder in one commit is fine


def test_lfs_upload_grants_are_bounded_and_expire(tmp_path):
    from hub.server import MAX_BATCH_OBJECTS, UploadGrants

    server = start_server(tmp_path)
    try:
        HfApi(endpoint=server.endpoint).create_repo("erin/lfs")
        objects = [{"oid": f"{i:064x}", "size": 1} for i in range(MAX_BATCH_OBJECTS + 1)]
        status, _, _ = request(server, "POST", "/erin/lfs.git/info/lfs/objects/batch",
                               json.dumps({"operation": "upload", "objects": objects}).encode())
        assert status == 413 and len(server.upload_grants) == 0
        status, _, body = request(server, "POST", "/erin/lfs.git/info/lfs/objects/batch",
                                  json.dumps({"operation": "upload", "objects": objects[:3]}).encode())
        assert status == 200 and len(server.upload_grants) == 3
    finally:
        server.shutdown()
        server.server_close()
    grants = UploadGrants(seconds=0.2, limit=4)
    capabilities = [grants.grant(f"{i:064x}") for i in range(6)]
    assert len(grants) == 4 and not grants.allows(capabilities[0], f"{0:064x}")  # the oldest went first
    assert grants.allows(capabilities[5], f"{5:064x}")
    import time
    time.sleep(0.3)
    assert len(grants) == 0 and not grants.allows(capabilities[5], f"{5:064x}")


def drip(server, head: bytes, body: bytes, every: float) -> tuple[int, float]:
    """Sends `head` at once, then `body` a byte every `every` s until the server closes; returns (body bytes sent,
    seconds)."""
    import select
    import socket
    import time

    started = time.monotonic()
    with socket.create_connection(server.server_address[:2], timeout=30) as sock:
        sock.sendall(head)
        sent = 0
        for byte in body:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sent += 1
            readable, _, _ = select.select([sock], [], [], every)
            if readable:
                break
        return sent, time.monotonic() - started


def test_headers_have_their_own_deadline_and_a_body_a_minimum_rate(tmp_path):
    """A slow drip is cut by the headers' deadline or the body's rate long before the whole request's deadline."""
    server = serve(str(tmp_path), port=0, timeout=5, request_deadline=100, header_deadline=1.0, min_body_rate=20,
                   body_grace=1.0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sent, seconds = drip(server, b"", b"GET /api/whoami-v2 HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200, 0.2)
        assert sent < 20 and seconds < 8  # headers: cut after about 1 s, not 100
        head = b"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n"
        sent, seconds = drip(server, head, b" " * 500, 0.2)  # 5 bytes/s, under 20
        assert sent < 40 and seconds < 10
        assert request(server, "POST", "/api/validate-yaml", b"{}")[0] == 200  # a normal request is served
    finally:
        server.shutdown()
        server.server_close()
