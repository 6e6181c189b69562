"""What one request, or one client, may cost the server: bounded options and work, slow and
vanished clients, browsers and keys, and faults that are the server's own (JSON, never a crash)."""

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_pipelines import _head_checkpoint
from test_serve import Server

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

TINY = Path(__file__).parent.parent / "models" / "tiny-albert"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    mc = _head_checkpoint(root / "mc", "for_multiple_choice")
    qa = _head_checkpoint(root / "qa", "for_question_answering", scale=3.0)
    s = Server(
        root,
        *("--model", f"tiny={TINY}", "--model", f"mc={mc}", "--model", f"qa={qa}"),
        *("--max-request-tokens", "4096", "--max-answers", "500", "--max-batch-tokens", "256"),
        *("--header-timeout", "1", "--body-timeout", "1", "--max-connections", "8"),
    )
    yield s
    s.stop()


def _raw(server, data: bytes, wait: float = 5.0) -> bytes:
    """What the server sends back to a raw client that sends `data` and then waits."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            chunks.append(b"<still open>")
    return b"".join(chunks)


def test_fill_mask_options_are_typed_and_answers_bounded(server):
    masks = "[MASK] " * 60
    for options, param, message in (
        ({"top_k": 1e9}, "top_k", "top_k must be an integer in [1, 101]"),
        ({"top_k": 1.5}, "top_k", "top_k must be an integer"),
        ({"top_k": True}, "top_k", "top_k must be an integer"),
        ({"targets": 5}, "targets", "targets must be a string or a list"),
        ({"targets": {"a": 1}}, "targets", "targets must be a string or a list"),
        ({"top_k": 20}, "top_k", "would return 1200 answers, over the limit of 500"),
    ):
        status, body, _ = server.call("/v1/fill-mask", {"model": "tiny", "inputs": masks, **options})
        assert status == 400 and message in body["error"]["message"], (options, body)
        assert body["error"]["param"] == param
    assert server.call("/v1/fill-mask", {"model": "tiny", "inputs": masks, "top_k": 5})[0] == 200


def test_work_is_counted_in_tokens_not_inputs(server):
    many = {"question": "Which?", "choices": [f"choice number {i}" for i in range(300)]}
    status, body, _ = server.call("/v1/multiple-choice", {"model": "mc", "inputs": many})
    assert status == 400 and "over the limit of 4096" in body["error"]["message"]
    context = "The cat sat on the mat in the garden. " * 400
    request = {"model": "qa", "inputs": {"question": "Where?", "context": context}, "doc_stride": 100}
    status, body, _ = server.call("/v1/qa", request)
    assert status == 400 and "context windows counted" in body["error"]["message"]
    status, body, _ = server.call("/v1/qa", {**request, "doc_stride": 1.5})
    assert status == 400 and "doc_stride must be an integer" in body["error"]["message"]
    # within the request's budget, but one input is one piece of work: over --max-batch-tokens, other
    # requests would wait behind it whole (a 100,000-character context took ~3 s)
    one = {"model": "qa", "inputs": {"question": "Where?", "context": context[:1600]}, "doc_stride": 1}
    status, body, _ = server.call("/v1/qa", one)
    assert (
        status == 400
        and "over the 256 the server runs at once (--max-batch-tokens)" in body["error"]["message"]
    )
    small = {"model": "qa", "inputs": {"question": "Where?", "context": context[:200]}, "doc_stride": 1}
    assert server.call("/v1/qa", small)[0] == 200


def test_long_requests_run_in_pieces_that_others_interleave_with(tmp_path):
    """A request of 256 inputs of ~110 tokens runs in pieces of --max-batch-tokens (~100 of them); a
    small request sent while it runs is answered long before it ends."""
    server = Server(tmp_path, "--model", f"tiny={TINY}", "--max-batch-tokens", "256")
    texts = [f"[MASK] sat on the mat number {i} " + "in the garden by the river " * 16 for i in range(256)]
    finished = {}

    def long():
        server.call("/v1/fill-mask", {"model": "tiny", "inputs": texts, "top_k": 1})
        finished["long"] = time.perf_counter()

    try:
        thread = threading.Thread(target=long)
        thread.start()
        time.sleep(0.3)
        assert server.call("/v1/fill-mask", {"model": "tiny", "inputs": "a [MASK] b", "top_k": 1})[0] == 200
        finished["short"] = time.perf_counter()
        thread.join()
        assert finished["short"] < finished["long"]
        # a client that leaves: its remaining pieces are dropped (the batch count stops growing)
        body = json.dumps({"model": "tiny", "inputs": texts, "top_k": 1}).encode()
        head = "POST /v1/fill-mask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            time.sleep(0.3)  # then it hangs up
        time.sleep(1.0)
        counts = [_batches(server)]
        time.sleep(1.0)
        counts.append(_batches(server))
        assert counts[0] == counts[1] and any(" 499 " in line for line in server.log)
    finally:
        server.stop()


def _batches(server) -> float:
    metrics = server.call("/metrics")[1]
    return float(
        next(line for line in metrics.splitlines() if line.startswith("mlx_albert_batch_size_count")).split()[
            1
        ]
    )


def test_slow_and_vanishing_clients(server):
    head = _raw(server, b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no end of head
    assert head == b""  # closed after --header-timeout 1 (the read would time out at 5 s)
    body = b'{"input": "a'
    partial = (
        b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + body
    )
    answer = _raw(server, partial)
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in answer
    idle = [socket.create_connection(server.url.removeprefix("http://").split(":")) for _ in range(8)]
    try:
        assert _raw(server, b"").startswith(b"HTTP/1.1 503")  # past --max-connections: told at once
    finally:
        for s in idle:
            s.close()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:  # leaves in the middle of its body
        sock.sendall(partial)
    time.sleep(0.5)
    assert not any("Traceback" in line for line in server.log)


def test_keys_browsers_and_hosts(tmp_path):
    keyed = Server(tmp_path, "--model", str(TINY), "--api-key", "secret")
    try:
        status, _, headers = keyed.call("/v1/embeddings", {"input": "a"})
        assert status == 401 and headers.get("WWW-Authenticate") == "Bearer"
        assert keyed.call("/v1/embeddings", {"input": "a"}, {"Authorization": "bearer secret"})[0] == 200
        assert keyed.call("/v1/embeddings", {"input": "a"}, {"Authorization": "Bearer secre"})[0] == 401
    finally:
        keyed.stop()
    open_server = Server(tmp_path, "--model", str(TINY))
    try:
        for headers, status in (
            ({"Host": "evil.example"}, 403),  # a DNS-rebound name
            ({"Origin": "http://evil.example"}, 403),  # a web page elsewhere
            ({"Origin": open_server.url}, 200),
            ({"Content-Type": "text/plain"}, 415),  # what a page may send without a preflight
        ):
            assert open_server.call("/v1/embeddings", {"input": "a"}, headers)[0] == status, headers
    finally:
        open_server.stop()


def test_server_faults_are_500_in_json_and_bad_ports_one_line(tmp_path):
    from mlx_albert.serve.errors import ServerFault
    from mlx_albert.serve.guard import Guard
    from mlx_albert.serve.requests import json_response

    with pytest.raises(ServerFault, match="NaN or infinity"):
        json_response({"score": float("nan")})
    response = Guard._fail(ServerFault("the answer holds NaN"), "/v1/classify")
    assert response.status_code == 500 and json.loads(response.body)["error"]["type"] == "server_error"
    done = subprocess.run(
        [sys.executable, "-m", "mlx_albert", "serve", "--model", str(TINY), "--port", "99999"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 1 and "--port 99999 is not a port" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
