"""SentenceEncoder.encode against sentence-transformers' SentenceTransformer.encode (torch, CPU,
float32) on the paraphrase-albert-small-v2 shape (embedding 128, hidden 768, 6 layers, 12 heads, FFN
3072, mean pooling; random weights, the bundled model's tokenizer) over 2,000 sentences of real prose
(the held-out pydoc text, then Python's own docstrings), the same batch size, in interleaved rounds;
medians. sentence-transformers runs in its own process (no MLX or preloaded BLAS threads beside it).
Also ONNX Runtime through sentence-transformers' backend="onnx" when it is installed. Prints a
Markdown table and writes JSON; checks that both give the same vectors.

    python benchmarks/encode.py                       # 2,000 sentences, batch 32, 5 rounds
    python benchmarks/encode.py --sentences 500 --rounds 3 --out bench_results"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "mlx_albert" / "bundled" / "albert-pydoc-small"
SHAPE = dict(
    embedding_size=128, hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072
)


def sentences(n: int) -> list[str]:
    """n sentences of English prose: the held-out pydoc lines, then the sentences of the docstrings of
    a fixed set of standard-library modules and their members (the same on every machine with one
    Python version)."""
    import importlib
    import warnings

    found = [
        line.strip() for line in (ROOT / "tests" / "data" / "pydoc_heldout.txt").read_text().splitlines()
    ]
    for name in STDLIB:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(name)
        for obj in [module, *(vars(module)[k] for k in sorted(vars(module)))]:
            doc = getattr(obj, "__doc__", None) if not isinstance(obj, str | int | float) else None
            if isinstance(doc, str):
                found += [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.split()))]
    found = [s for s in dict.fromkeys(found) if 20 <= len(s) <= 400]
    if len(found) < n:
        raise SystemExit(f"only {len(found)} sentences available; pass --sentences {len(found)}")
    return found[:n]


STDLIB = ("argparse", "collections", "csv", "dataclasses", "json", "logging", "os", "pathlib", "re", "shutil")
STDLIB += ("subprocess", "tarfile", "threading", "typing", "zipfile", "datetime", "functools", "itertools")


def make_folder(folder: Path) -> None:
    """A sentence-transformers folder of the paraphrase-albert-small-v2 shape with random weights."""
    import torch
    from transformers import AlbertConfig, AlbertModel

    torch.manual_seed(0)
    tokenizer_config = json.loads((BUNDLED / "config.json").read_text())
    config = AlbertConfig(vocab_size=tokenizer_config["vocab_size"], max_position_embeddings=512, **SHAPE)
    AlbertModel(config).save_pretrained(folder, safe_serialization=True)
    for name in ("spiece.model", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(BUNDLED / name, folder / name)
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**tok, "model_max_length": 512}))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 768, "pooling_mode_mean_tokens": True})
    )
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 128, "do_lower_case": False})
    )
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))


def torch_worker(folder: str, texts_file: str, batch: int, backend: str) -> None:
    """Encodes on each "go" line from stdin and answers with the seconds it took; "save PATH" writes
    the last vectors."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    texts = json.loads(Path(texts_file).read_text())
    model = SentenceTransformer(folder, device="cpu", backend=backend)
    vectors = model.encode(texts[: batch * 2], batch_size=batch)  # warm-up
    print("ready", flush=True)
    for line in sys.stdin:
        if line.startswith("save "):
            np.save(line[5:].strip(), vectors)
            print("saved", flush=True)
            continue
        start = time.perf_counter()
        vectors = model.encode(texts, batch_size=batch)
        print(time.perf_counter() - start, flush=True)


class Worker:
    def __init__(self, folder: Path, texts_file: Path, batch: int, backend: str):
        argv = [sys.executable, __file__, "--torch-worker", str(folder), str(texts_file), str(batch), backend]
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {backend} worker did not start")

    def ask(self, line: str) -> str:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def matmul_gflops(mx) -> float:
    """The in-process rate of a float32 matmul of the FFN's shape (2048 tokens): the compute peak."""
    a, w = mx.random.normal((2048, 768)), mx.random.normal((768, 3072))
    mx.eval(a, w)
    for _ in range(3):
        mx.eval(a @ w)
    start = time.perf_counter()
    for _ in range(20):
        mx.eval(a @ w)
    return 20 * 2 * 2048 * 768 * 3072 / (time.perf_counter() - start) / 1e9


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import optimum.onnxruntime  # noqa: F401  (what backend="onnx" loads)
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="bench_results", help="folder for encode.json")
    args = parser.parse_args()
    import mlx_albert  # first: preloads an optimised cblas before mlx.core initialises

    # isort: split
    import mlx.core as mx
    import numpy as np

    texts = sentences(args.sentences)
    with tempfile.TemporaryDirectory() as tmp:
        folder, texts_file = Path(tmp) / "model", Path(tmp) / "texts.json"
        folder.mkdir()
        make_folder(folder)
        texts_file.write_text(json.dumps(texts))
        encoder = mlx_albert.SentenceEncoder.from_pretrained(folder)
        encoder.encode(texts[: args.batch * 2], batch_size=args.batch)  # warm-up
        tokens = sum(len(ids) for ids in encoder.tokenize(texts)[0])
        workers = {"sentence-transformers (torch)": Worker(folder, texts_file, args.batch, "torch")}
        if onnx_available():
            workers["sentence-transformers (onnx)"] = Worker(folder, texts_file, args.batch, "onnx")
        times: dict[str, list[float]] = {name: [] for name in ["mlx_albert", *workers]}
        for _ in range(args.rounds):  # interleaved: a busy moment slows every contender alike
            for name, worker in workers.items():
                times[name].append(float(worker.ask("go")))
            start = time.perf_counter()
            ours = encoder.encode(texts, batch_size=args.batch)
            times["mlx_albert"].append(time.perf_counter() - start)
        theirs_file = Path(tmp) / "theirs.npy"
        workers["sentence-transformers (torch)"].ask(f"save {theirs_file}")
        theirs = np.load(theirs_file)
        for worker in workers.values():
            worker.close()
    difference = float(np.abs(ours - theirs).max())
    cosine = float(
        np.min(np.sum(ours * theirs, 1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)))
    )
    rate = {name: len(texts) / statistics.median(t) for name, t in times.items()}
    base = rate["sentence-transformers (torch)"]
    # The forward's matmul FLOPs per real token (projections and FFN; attention scores are ~2% at
    # 21 tokens), so GFLOP/s counts useful work: padding, which torch computes and we pack away, is free.
    h, f, layers = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["num_hidden_layers"]
    per_token = 2 * layers * (4 * h * h + 2 * h * f)
    gflops = {name: r / len(texts) * tokens * per_token / 1e9 for name, r in rate.items()}
    peak = matmul_gflops(mx)
    device = "GPU" if mx.default_device() == mx.gpu else "CPU"
    print(f"\nencode, {len(texts)} sentences, batch {args.batch}, {args.rounds} interleaved rounds (medians)")
    print(f"{platform.processor() or platform.machine()}, {device}, {date.today()}\n")
    print("| encoder | sentences/s | useful GFLOP/s | vs sentence-transformers |\n|---|---:|---:|---:|")
    for name, r in rate.items():
        print(f"| {name} | {r:.1f} | {gflops[name]:.0f} | {r / base:.2f}x |")
    ceiling = peak / gflops["sentence-transformers (torch)"]
    print(f"\n{tokens} tokens; a bare 2048 x 768 x 3072 float32 matmul runs {peak:.0f} GFLOP/s here:")
    print(f"identical vectors at that rate would be {ceiling:.2f}x sentence-transformers")
    print(f"\nsame vectors: max |difference| {difference:.2e}, min cosine {cosine:.7f}")
    if not onnx_available():
        print("(ONNX Runtime: needs onnxruntime and optimum-onnx beside sentence-transformers)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "date": str(date.today()),
        "machine": platform.machine(),
        "device": device,
        "sentences": len(texts),
        "batch": args.batch,
        "rounds": args.rounds,
        "seconds": times,
        "sentences_per_s": rate,
        "tokens": tokens,
        "useful_gflops": gflops,
        "matmul_gflops": peak,
        "max_abs_difference": difference,
        "min_cosine": cosine,
    }
    (out / "encode.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--torch-worker":
        torch_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        main()
