"""`mlx-albert serve`, started for real on a free loopback port: the openai client, every endpoint
against its pipeline, 64 concurrent clients, overload and recovery, bad requests, SIGTERM."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import close_json
from test_pipelines import EMBEDDING, NER_LABELS, REORDERED, _head_checkpoint
from tolerances import unit_norm_tol

import mlx_albert
from mlx_albert import pipeline

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

TINY = Path(__file__).parent.parent / "models" / "tiny-albert"
TEXTS = ["The cat sat on the mat.", "A dog ran far away from home", "rivers", "the sea again and again"]


class Server:
    def __init__(self, tmp: Path, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlx_albert", "serve", "--port", "0", *args],
            cwd=tmp,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        line = self.proc.stderr.readline()
        while line and "http://" not in line:
            line = self.proc.stderr.readline()
        match = re.search(r"http://([\d.]+):(\d+)", line)
        assert match, (
            f"server did not start: {line}{self.proc.stderr.read() if self.proc.poll() is not None else ''}"
        )
        self.url = f"http://{match[1]}:{match[2]}"
        self.log: list[str] = []
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()
        assert self.call("/health")[0] == 200  # waits in the listen backlog until the app is up

    def call(self, path: str, body=None, headers=None, raw: bytes | None = None, timeout=60):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = (
            {"Content-Type": "application/json", **(headers or {})} if data is not None else headers or {}
        )
        request = urllib.request.Request(self.url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, _decode(response.read()), response.headers
        except urllib.error.HTTPError as e:
            return e.code, _decode(e.read()), e.headers

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


def _decode(data: bytes):
    try:
        return json.loads(data)
    except ValueError:
        return data.decode()


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    return {
        "cls": _head_checkpoint(
            root / "cls", "for_sequence_classification", num_labels=3, id_to_label={0: "a", 1: "b", 2: "c"}
        ),
        "ner": _head_checkpoint(
            root / "ner", "for_token_classification", num_labels=5, id_to_label=NER_LABELS
        ),
        "qa": _head_checkpoint(root / "qa", "for_question_answering", scale=3.0),
        "mc": _head_checkpoint(root / "mc", "for_multiple_choice", scale=3.0),
        "root": root,
    }


@pytest.fixture(scope="module")
def server(heads):
    models = [f"tiny={TINY}"] + [f"{k}={v}" for k, v in heads.items() if k != "root"]
    s = Server(heads["root"], *[a for m in models for a in ("--model", m)], "--max-wait-ms", "10")
    yield s
    s.stop()


def test_openai_client_embeddings_equal_the_pipeline(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    assert client.models.retrieve("tiny").id == "tiny"  # GET /v1/models/{id}
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
    response = client.embeddings.create(model="tiny", input=TEXTS)
    got = np.array([d.embedding for d in response.data])
    want = pipeline("embed", TINY)(TEXTS)
    # the server batches and packs other requests' texts alongside: the same sums reordered
    assert got.shape == want.shape and np.abs(got - want).max() <= EMBEDDING
    assert response.usage.prompt_tokens == sum(
        len(mlx_albert.AlbertTokenizer.from_pretrained(TINY)(t)["input_ids"]) for t in TEXTS
    )


def test_embeddings_formats_ids_dimensions_and_models(server):
    status, body, _ = server.call(
        "/v1/embeddings", {"model": "tiny", "input": TEXTS[0], "encoding_format": "base64"}
    )
    import base64

    vector = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), "<f4")
    assert status == 200 and np.abs(vector - pipeline("embed", TINY)(TEXTS[0])).max() <= EMBEDDING
    ids = mlx_albert.AlbertTokenizer.from_pretrained(TINY)(TEXTS[1])["input_ids"]
    status, body, _ = server.call("/v1/embeddings", {"model": "tiny", "input": [ids]})
    assert (
        np.abs(np.array(body["data"][0]["embedding"]) - pipeline("embed", TINY)(TEXTS[1])).max() <= EMBEDDING
    )
    status, body, _ = server.call("/v1/embeddings", {"model": "tiny", "input": TEXTS[:2], "dimensions": 16})
    short = np.array([d["embedding"] for d in body["data"]])
    norms = np.linalg.norm(short, axis=1)
    assert short.shape == (2, 16) and np.allclose(norms, 1, rtol=0, atol=unit_norm_tol(16))
    long_text = "word " * 1000
    status, body, _ = server.call("/v1/embeddings", {"model": "tiny", "input": [long_text, "short"]})
    assert (
        status == 200
        and body["usage"]["truncated_inputs"] == 1
        and body["usage"]["prompt_tokens"]
        == 128 + len(mlx_albert.AlbertTokenizer.from_pretrained(TINY)("short")["input_ids"])
    )
    status, body, _ = server.call("/v1/models")
    info = {m["id"]: m for m in body["data"]}
    assert info["cls"]["labels"] == ["a", "b", "c"] and info["tiny"]["max_length"] == 128
    assert info["tiny"]["labels"] == []  # a masked-LM checkpoint: no classifier, no labels
    assert info["tiny"]["embedding"] == {
        "pooling": "mean",
        "normalize": True,
        "from": "the embed pipeline's defaults",
    }
    assert server.call("/health")[0] == 200 and "mlx_albert_requests_total" in server.call("/metrics")[1]


def test_every_endpoint_equals_its_pipeline(server, heads):
    cases = [
        ("/v1/fill-mask", "tiny", "fill-mask", TINY, "The [MASK] sat.", {"top_k": 3}),
        (
            "/v1/classify",
            "cls",
            "text-classification",
            heads["cls"],
            [TEXTS[0], {"text": "a", "text_pair": "b"}],
            {"top_k": None},
        ),
        ("/v1/classify", "cls", "text-classification", heads["cls"], TEXTS[1], {}),
        (
            "/v1/ner",
            "ner",
            "token-classification",
            heads["ner"],
            TEXTS[:2],
            {"aggregation_strategy": "simple"},
        ),
        (
            "/v1/qa",
            "qa",
            "question-answering",
            heads["qa"],
            {"question": "Who sat?", "context": TEXTS[0]},
            {"top_k": 2},
        ),
        (
            "/v1/multiple-choice",
            "mc",
            "multiple-choice",
            heads["mc"],
            {"question": "Q", "choices": ["a b", "c"]},
            {},
        ),
    ]
    for path, name, task, folder, inputs, options in cases:
        status, body, _ = server.call(path, {"model": name, "inputs": inputs, **options})
        want = pipeline(task, folder)(inputs, **options)
        assert status == 200 and close_json(body, want, REORDERED), path


def test_64_concurrent_clients_each_get_their_own_answer(server):
    texts = [
        " ".join(["cat", "dog", "sea", "hill", "river"][j % 5] for j in range(i % 9 + 1)) + f" {i}"
        for i in range(64)
    ]
    want = pipeline("embed", TINY)(texts)
    got: dict[int, np.ndarray] = {}

    def client(i):
        status, body, _ = server.call("/v1/embeddings", {"model": "tiny", "input": texts[i]})
        assert status == 200
        got[i] = np.array(body["data"][0]["embedding"])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 64 and max(np.abs(got[i] - want[i]).max() for i in range(64)) <= EMBEDDING
    batches = server.call("/metrics")[1]
    mean = (
        re.search(r"mlx_albert_batch_size_sum (\S+)", batches)[1],
        re.search(r"mlx_albert_batch_size_count (\S+)", batches)[1],
    )
    assert float(mean[0]) / float(mean[1]) > 1  # requests were batched together


def test_bad_requests_get_their_status_codes(server):
    cases = [
        ({"model": "nope", "input": "a"}, 404, "no model 'nope'"),
        ({"input": "a"}, 400, "several models are loaded"),
        ({"model": "tiny", "input": 5}, 400, "input must be"),
        ({"model": "tiny", "input": []}, 400, "no inputs"),
        ({"model": "tiny", "input": ["a"] * 2049}, 400, "2049 inputs is over the limit of 2048"),  # as OpenAI
        ({"model": "tiny", "input": [[1, 2, 10**6]]}, 400, "outside [0, 101)"),
        ({"model": "tiny", "input": "a", "dimensions": 1000}, 400, "dimensions must be"),
        ({"model": "tiny", "input": "a", "encoding_format": "hex"}, 400, "encoding_format"),
        ({"model": "tiny", "input": "a", "extra": 1}, 400, "unknown field 'extra'"),
    ]
    for body, status, message in cases:
        got, answer, _ = server.call("/v1/embeddings", body)
        assert got == status and message in answer["error"]["message"], (body, answer)
        assert set(answer["error"]) >= {"message", "type", "param"}
    status, answer, _ = server.call("/v1/nothing", {"input": "a"})
    assert status == 404 and answer["error"]["type"] == "not_found_error"
    assert server.call("/v1/embeddings")[0] == 405 and server.call("/v1/embeddings")[1]["error"]["message"]
    assert server.call("/v1/embeddings", raw=b"{not json")[0] == 400
    assert server.call("/v1/embeddings", raw=b"[1, 2]")[0] == 400
    status, answer, _ = server.call("/v1/fill-mask", {"model": "tiny", "inputs": "no mask"})
    assert status == 400 and "no [MASK]" in answer["error"]["message"]
    status, answer, _ = server.call("/v1/classify", {"model": "tiny", "inputs": "x"})
    assert (
        status == 400 and "needs a checkpoint trained for text-classification" in answer["error"]["message"]
    )
    status, answer, _ = server.call("/v1/fill-mask", {"model": "tiny", "inputs": "a [MASK]", "top_k": -1})
    assert status == 400 and "top_k" in answer["error"]["message"]
    assert server.call("/v1/embeddings", {"model": "tiny", "input": "still fine"})[0] == 200


def test_limits_auth_overload_and_recovery(tmp_path):
    server = Server(
        tmp_path,
        "--model",
        str(TINY),
        "--max-body-bytes",
        "2000",
        "--max-queue",
        "2",
        "--max-wait-ms",
        "300",
        env={"MLX_ALBERT_API_KEY": "secret"},
    )
    try:
        key = {"Authorization": "Bearer secret"}
        assert server.call("/v1/embeddings", {"input": "a"})[0] == 401
        assert server.call("/v1/embeddings", {"input": "a"}, {"Authorization": "Bearer wrong"})[0] == 401
        assert server.call("/health")[0] == 200
        assert server.call("/v1/embeddings", {"input": "a" * 5000}, key)[0] == 413
        statuses, retry = [], []

        def client():
            status, _, headers = server.call("/v1/embeddings", {"input": "a b c"}, key)
            statuses.append(status)
            retry.append(headers.get("Retry-After"))

        threads = [threading.Thread(target=client) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert 503 in statuses and 200 in statuses and set(statuses) <= {200, 503}
        assert "1" in {r for s, r in zip(statuses, retry, strict=True) if s == 503}
        time.sleep(0.5)
        assert server.call("/v1/embeddings", {"input": "after the storm"}, key)[0] == 200  # recovered
    finally:
        server.stop()
    assert any("POST /v1/embeddings 503" in line for line in server.log)


def test_sigterm_finishes_requests_in_flight(tmp_path):
    server = Server(tmp_path, "--model", str(TINY), "--max-wait-ms", "500")
    results = []

    def client(i):
        results.append(server.call("/v1/embeddings", {"input": f"sentence {i}"})[0])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # all eight are waiting in the batch window
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join()
    assert server.proc.wait(timeout=60) == 0, server.log[-20:]  # an orderly stop
    assert results == [200] * 8  # none lost
    assert any("POST /v1/embeddings 200" in line for line in server.log)
    time.sleep(0.2)  # the log reader thread drains the pipe
    stops = [line for line in server.log if "stopped on SIGTERM" in line]
    assert len(stops) == 1 and "grace period 30 s" in stops[0]
    assert not any("Traceback" in line for line in server.log)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url + "/health", timeout=5)


def test_front_and_worker_tokenizers_are_independent():
    """The event loop tokenizes requests while the worker runs pipelines: AlbertTokenizer.encode sets
    truncation on its `tokenizers.Tokenizer`, so the two threads must not share one."""
    from mlx_albert.service.models import ServedModel

    model, tok = mlx_albert.load(TINY, return_tokenizer=True)
    served = ServedModel("tiny", model, tok)
    assert served.front is not served.tokenizer and served.front.tokenizer is not served.tokenizer.tokenizer
    long_text = "word " * 500
    served.tokenizer.tokenizer.enable_truncation(8)  # as a pipeline does in the middle of its call
    assert len(served.front(long_text, truncation=True, max_length=128)["input_ids"]) == 128
    assert served.front(TEXTS[0]) == tok(TEXTS[0])


def test_batcher_reads_deferred_batches_while_the_next_one_starts():
    """A call may return a Deferred: the next batch's call starts before the first one's results
    are read (two in flight, no more); every job gets its own rows; a failing read retries each
    job alone, so only the bad one fails."""
    import asyncio

    from mlx_albert.service.batcher import Batcher, Deferred

    events, gate = [], threading.Event()

    def call(items):
        events.append(("call", tuple(items)))
        if "bad" in items:
            return Deferred(lambda: [x.upper() for x in items if x != "bad"] + [1 / 0])
        if "slow" in items:
            return Deferred(lambda: gate.wait(5) and [x.upper() for x in items])
        return Deferred(lambda: [x.upper() for x in items])

    async def main():
        batcher = Batcher(max_wait_ms=0, max_batch_tokens=100, max_queue=16)
        await batcher.start()

        async def calls(n):  # until n calls have started (the worker thread appends them)
            for _ in range(500):
                if len(events) >= n:
                    return
                await asyncio.sleep(0.01)

        slow = asyncio.create_task(batcher.submit("k", call, ["slow"], 1))
        await calls(1)
        second = asyncio.create_task(batcher.submit("k", call, ["b", "c"], 1))
        await calls(2)
        third = asyncio.create_task(batcher.submit("k", call, ["d"], 1))  # waits: two are in flight
        await asyncio.sleep(0.2)
        started = list(events)
        gate.set()
        answers = [await slow, await second, await third]
        batcher.max_wait = 0.05
        batcher.incoming = 2  # two more on their way: gathered into one call, whose read fails
        jobs = [asyncio.create_task(batcher.submit("k", call, [x], 1)) for x in ("ok", "bad")]
        done = await asyncio.gather(*jobs, return_exceptions=True)
        await batcher.stop()
        return started, answers, done

    started, answers, done = asyncio.run(main())
    assert started == [("call", ("slow",)), ("call", ("b", "c"))]
    assert answers == [["SLOW"], ["B", "C"], ["D"]]
    assert done[0] == ["OK"] and isinstance(done[1], ZeroDivisionError)
    assert ("call", ("ok", "bad")) in events and events[-1] == ("call", ("bad",))


def test_a_drain_answers_finished_work_and_503s_what_outlives_the_grace_period():
    """After SIGTERM the batcher keeps answering for the grace period; jobs still waiting when it
    ends get ShuttingDown (the server's JSON 503), never a cancellation."""
    import asyncio

    from mlx_albert.service.batcher import Batcher, ShuttingDown

    gate = threading.Event()

    def call(items):
        if "slow" in items:
            gate.wait(5)
        return [x.upper() for x in items]

    async def main():
        batcher = Batcher(max_wait_ms=0, max_batch_tokens=100, max_queue=16)
        await batcher.start()
        quick = await batcher.submit("k", call, ["quick"], 1)
        slow = asyncio.create_task(batcher.submit("k", call, ["slow"], 1))
        queued = asyncio.create_task(batcher.submit("k", call, ["queued"], 1))
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        await asyncio.wait_for(batcher.drain(0.3), 60)  # a drain that ignored its 0.3 s fails, not hangs
        results = await asyncio.gather(slow, queued, return_exceptions=True)
        waited = time.perf_counter() - start
        gate.set()
        await batcher.stop()
        return quick, results, waited

    quick, results, waited = asyncio.run(main())
    assert quick == ["QUICK"] and 0.3 <= waited  # (no upper bound in seconds: it depends on the machine)
    assert all(isinstance(r, ShuttingDown) and "0.3 s grace period ended" in str(r) for r in results)
