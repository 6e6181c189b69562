"""Load on `mlx-albert serve` over loopback: N concurrent clients send single sentences to
/v1/embeddings for a bounded time, with dynamic batching on (--max-wait-ms 5) and off (0).
Reports requests/s, tokens/s, p50/p95/p99 latency and the mean batch size; prints a Markdown table
and writes JSON.

    python benchmarks/serve_load.py                            # tiny model, 1 and 32 clients, 10 s
    python benchmarks/serve_load.py --shapes tiny,base --clients 32 --seconds 20"""

from __future__ import annotations

import argparse
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


def load(port: int, clients: int, seconds: float) -> dict:
    latencies, tokens, stop = [], [0], time.perf_counter() + seconds

    def client(seed: int):
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms Nagle stalls
        while time.perf_counter() < stop:
            body = json.dumps({"input": " ".join(rng.choices(WORDS, k=rng.randint(5, 20)))})
            t = time.perf_counter()
            conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
            answer = json.loads(conn.getresponse().read())
            latencies.append(time.perf_counter() - t)
            tokens[0] += answer["usage"]["prompt_tokens"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - begin
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/metrics")
    metrics = conn.getresponse().read().decode()
    size = float(re.search(r"mlx_albert_batch_size_sum (\S+)", metrics)[1])
    count = float(re.search(r"mlx_albert_batch_size_count (\S+)", metrics)[1])
    p50, p95, p99 = np.percentile(np.array(latencies) * 1e3, [50, 95, 99])
    return {
        "requests_per_s": len(latencies) / elapsed,
        "tokens_per_s": tokens[0] / elapsed,
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "mean_batch": size / max(count, 1),
        "requests": len(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="tiny", help="tiny and/or base (random ALBERT-base weights)")
    parser.add_argument("--clients", default="1,32", help="comma-separated concurrent client counts")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", default="bench_results")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            model = TINY if shape == "tiny" else base_shape(Path(tmp) / "base")
            for wait in (5.0, 0.0):
                for clients in [int(c) for c in args.clients.split(",")]:
                    proc, port = start(model, wait, tmp)
                    try:
                        load(port, 1, 1.0)  # warm-up, then fresh counters below come from a new server
                    finally:
                        proc.terminate()
                        proc.wait()
                    proc, port = start(model, wait, tmp)
                    try:
                        row = {
                            "shape": shape,
                            "batching": wait > 0,
                            "clients": clients,
                            **load(port, clients, args.seconds),
                        }
                    finally:
                        proc.terminate()
                        proc.wait()
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr)
    print(f"serve load, {args.seconds:.0f} s per row, {platform.machine()}, {platform.python_version()}")
    print("| shape | batching | clients | req/s | tokens/s | p50 ms | p95 ms | p99 ms | mean batch |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cells = [r["shape"], "on" if r["batching"] else "off", r["clients"], f"{r['requests_per_s']:.0f}"]
        cells += [
            f"{r['tokens_per_s']:.0f}",
            *(f"{r[k]:.1f}" for k in ("p50_ms", "p95_ms", "p99_ms", "mean_batch")),
        ]
        print("| " + " | ".join(map(str, cells)) + " |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_load.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
