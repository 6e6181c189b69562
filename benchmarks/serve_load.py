"""Load on `mlx-albert serve` over loopback: N concurrent clients send single sentences to
/v1/embeddings for a bounded time, with dynamic batching on (--max-wait-ms 5) and off (0).
Reports requests/s, tokens/s, p50/p95/p99 latency and the mean batch size, and the on/off ratio
of each round (on and off alternate, so a host whose speed drifts shows in the spread); prints a
Markdown table and writes JSON. Before the servers start it times the forward alone, in this
process, with the machine to itself: one sentence against a batch of them, per sentence. That is
the most batching can gain here; a server adds per-request costs (HTTP, JSON, the clients) that
batching does not share, on the same cores, so its ratio should stay under it.
The clients are one asyncio loop in this process, light enough to leave the server most of a
small machine's cores.

    python benchmarks/serve_load.py                            # tiny model, 1 and 32 clients, 10 s
    python benchmarks/serve_load.py --clients 32 --repeats 5
    python benchmarks/serve_load.py --shapes tiny,base --clients 32 --seconds 20"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import platform
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "models" / "tiny-albert"
WORDS = "the cat sat on a mat and then the dog ran far away from home to see the river again".split()


def base_shape(folder: Path) -> Path:
    """ALBERT-base's shape with random weights and the tiny tokenizer (no download needed)."""
    import shutil

    import mlx_albert

    config = mlx_albert.AlbertConfig(intermediate_size=3072, vocab_size=30000)
    mlx_albert.AlbertModel(config).save_pretrained(folder)
    for name in ("spiece.model", "tokenizer_config.json"):
        shutil.copy(TINY / name, folder / name)
    return folder


def start(model: Path, wait_ms: float, cwd: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlx_albert",
            "serve",
            "--model",
            f"m={model}",
            "--port",
            "0",
            "--max-wait-ms",
            str(wait_ms),
            "--max-queue",
            "4096",
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    line = proc.stderr.readline()
    while line and "http://" not in line:
        line = proc.stderr.readline()
    port = int(re.search(r":(\d+) ", line)[1])
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
    return proc, port


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(5, 20)))


def forward_bound(model: Path, batch: int, repeats: int = 24) -> dict:
    """The embed pipeline in this process on 1 sentence and on `batch` at once (the benchmark's
    sentences, tokenising included), alternating; median seconds of each and the per-sentence
    ratio, the most that batching `batch` requests can gain here."""
    import mlx_albert
    from mlx_albert.tasks import embed

    albert, tokenizer = mlx_albert.load(model, return_tokenizer=True)
    rng = random.Random(0)
    times: dict[int, list[float]] = {1: [], batch: []}
    for i in range(repeats + 2):
        for n in times:
            texts = [sentence(rng) for _ in range(n)]
            t = time.perf_counter()
            embed(albert, tokenizer, texts, batch_size=batch)
            if i >= 2:  # the first calls trace and build kernels
                times[n].append(time.perf_counter() - t)
    one, many = (float(np.median(times[n])) for n in (1, batch))
    return {"one_ms": one * 1e3, "batch": batch, "batch_ms": many * 1e3, "bound": one * batch / many}


async def _client(port: int, seed: int, stop: float, latencies: list, tokens: list) -> None:
    """One keep-alive connection sending a sentence at a time (raw HTTP/1.1 over asyncio streams,
    far less client CPU per request than http.client threads, so the server keeps its cores)."""
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while time.perf_counter() < stop:
        body = json.dumps({"input": sentence(rng)}).encode()
        head = f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        t = time.perf_counter()
        writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        headers = await reader.readuntil(b"\r\n\r\n")
        if not headers.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"the server answered {headers[:40]!r}")
        length = int(re.search(rb"(?i)content-length: (\d+)", headers)[1])
        answer = json.loads(await reader.readexactly(length))
        latencies.append(time.perf_counter() - t)
        tokens[0] += answer["usage"]["prompt_tokens"]
    writer.close()


def _batches(port: int) -> tuple[float, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/metrics")
    metrics = conn.getresponse().read().decode()
    size = float(re.search(r"mlx_albert_batch_size_sum (\S+)", metrics)[1])
    return size, float(re.search(r"mlx_albert_batch_size_count (\S+)", metrics)[1])


def load(port: int, clients: int, seconds: float) -> dict:
    latencies, tokens = [], [0]
    size0, count0 = _batches(port)

    async def run() -> float:
        begin = time.perf_counter()
        stop = begin + seconds
        await asyncio.gather(*(_client(port, i, stop, latencies, tokens) for i in range(clients)))
        return time.perf_counter() - begin

    elapsed = asyncio.run(run())
    size, count = _batches(port)
    p50, p95, p99 = np.percentile(np.array(latencies) * 1e3, [50, 95, 99])
    return {
        "requests_per_s": len(latencies) / elapsed,
        "tokens_per_s": tokens[0] / elapsed,
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "mean_batch": (size - size0) / max(count - count0, 1),
        "requests": len(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="tiny", help="tiny and/or base (random ALBERT-base weights)")
    parser.add_argument("--clients", default="1,32", help="comma-separated concurrent client counts")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of every row (on/off interleaved)")
    parser.add_argument(
        "--batch", type=int, default=16, help="sentences per forward for the in-process bound"
    )
    parser.add_argument("--out", default="bench_results")
    args = parser.parse_args()
    rows, bounds = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            model = TINY if shape == "tiny" else base_shape(Path(tmp) / "base")
            bounds[shape] = forward_bound(model, args.batch)  # before any server takes the cores
            print(json.dumps({"shape": shape, **bounds[shape]}), file=sys.stderr)
            for round_ in range(args.repeats):  # on and off alternate: a noisy host drifts between rows
                for clients in [int(c) for c in args.clients.split(",")]:
                    for wait in (5.0, 0.0):
                        proc, port = start(model, wait, tmp)
                        try:
                            load(port, clients, min(2.0, args.seconds))  # warm-up: traces, kernels
                            row = {"shape": shape, "batching": wait > 0, "clients": clients, "round": round_}
                            row.update(load(port, clients, args.seconds))
                        finally:
                            proc.terminate()
                            proc.wait()
                        rows.append(row)
                        print(json.dumps(row), file=sys.stderr)
    print(f"serve load, {args.seconds:.0f} s per row, {platform.machine()}, {platform.python_version()}")
    print("| shape | batching | clients | round | req/s | tokens/s | p50 ms | p95 ms | p99 ms | mean batch |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cells = [r["shape"], "on" if r["batching"] else "off", r["clients"], r["round"]]
        cells += [
            f"{r['requests_per_s']:.0f}",
            f"{r['tokens_per_s']:.0f}",
            *(f"{r[k]:.1f}" for k in ("p50_ms", "p95_ms", "p99_ms", "mean_batch")),
        ]
        print("| " + " | ".join(map(str, cells)) + " |")
    print("\nbatching on / off, requests/s of the same round (median over rounds):")
    for shape in dict.fromkeys(r["shape"] for r in rows):
        for clients in dict.fromkeys(r["clients"] for r in rows):
            pick = [r for r in rows if r["shape"] == shape and r["clients"] == clients]
            on = [r["requests_per_s"] for r in pick if r["batching"]]
            off = [r["requests_per_s"] for r in pick if not r["batching"]]
            ratios = [a / b for a, b in zip(on, off, strict=True)]
            spread = ", ".join(f"{x:.2f}" for x in ratios)
            print(f"- {shape}, {clients} clients: {np.median(ratios):.2f}x ({spread})")
    print("\nthe forward alone, in this process, machine to itself (the most batching can gain here):")
    for shape, b in bounds.items():
        print(
            f"- {shape}: 1 sentence {b['one_ms']:.2f} ms, {b['batch']} at once {b['batch_ms']:.2f} ms "
            f"({b['batch_ms'] / b['batch']:.2f} each): {b['bound']:.2f}x"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_load.json").write_text(json.dumps({"load": rows, "forward": bounds}, indent=2))


if __name__ == "__main__":
    main()
