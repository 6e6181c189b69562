"""Forward latency/throughput and a fine-tuning step: mlx_albert vs transformers, same run, same
device. Prints a Markdown table and writes JSON + Markdown under --out.

    python benchmarks/bench.py                          # CPU defaults: base, batch 1 and 8, seq 128
    python benchmarks/bench.py --models base,large --batch 1,8,32 --seq 128,512 --quant 4,8
    python benchmarks/bench.py --device gpu --dtypes bfloat16 --batch 1,32,256 --train --first \
        --peak-tflops 790                               # a GPU: fraction of the chip's dense bf16 peak"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

if __name__ == "__main__" and "--torch-worker" in sys.argv:
    # transformers runs in its own process: no MLX, no preloaded BLAS threads competing with it.
    mx = nn = optim = None
else:
    import mlx_albert  # noqa: F401  first: preloads an optimised cblas before mlx.core initialises

    # isort: split
    import mlx.core as mx
    import mlx.nn as nn

    from mlx_albert import AlbertConfig, AlbertForSequenceClassification, AlbertModel

# The real configs of albert-{base,large,xlarge,xxlarge}-v2 (vocab 30000, embedding 128).
SHAPES = {
    "base": dict(hidden_size=768, num_attention_heads=12, intermediate_size=3072, num_blocks=12),
    "large": dict(hidden_size=1024, num_attention_heads=16, intermediate_size=4096, num_blocks=24),
    "xlarge": dict(hidden_size=2048, num_attention_heads=16, intermediate_size=8192, num_blocks=24),
    "xxlarge": dict(hidden_size=4096, num_attention_heads=64, intermediate_size=16384, num_blocks=12),
}
DTYPES = ("float32", "float16", "bfloat16")


def config_for(shape: str) -> AlbertConfig:
    return AlbertConfig(vocab_size=30000, embedding_size=128, activation="gelu_new", **SHAPES[shape])


def timeit(fn, warmup: int, repeats: int) -> float:
    """Median seconds of fn() (fn must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


PADDED = True  # --no-padding: full rows, and the forward gets no mask (as the pipelines then pass)


def inputs(batch: int, seq: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 30000, (batch, seq)).astype(np.int32)
    mask = np.ones((batch, seq), np.int32)
    if PADDED:
        mask[batch // 2 :, seq * 3 // 4 :] = 0  # a realistic padded half
    return ids, mask


def forward_flops(config, batch: int, seq: int) -> float:
    """Matmul FLOPs of one forward (multiply-adds x 2): the embedding projection, then per layer
    the four attention projections, the two attention products and the FFN."""
    h, i = config.hidden_size, config.intermediate_size
    per_token_layer = 2 * (4 * h * h + 2 * seq * h + 2 * h * i)
    return batch * seq * (2 * config.embedding_size * h + config.num_layers * per_token_layer)


def train_bound(model, config, batch: int, seq: int, itemsize: int) -> int:
    """Bytes no training step can go below: weights, gradients and AdamW's two moments (float32),
    plus every layer's input and FFN activation kept for the backward pass."""
    from mlx.utils import tree_flatten

    weights = sum(v.size for _, v in tree_flatten(model.parameters()))
    saved = config.num_layers * batch * seq * (config.hidden_size + config.intermediate_size) * itemsize
    return 4 * 4 * weights + saved


def first_result(config_json: str, batch: int, seq: int, dtype: str, device: str, train: bool) -> float:
    """Seconds from building a model to its first result, in this (fresh) process: what a user
    waits for before the first answer or the first training step (kernel compilation included)."""
    mx.set_default_device(mx.gpu if device == "gpu" else mx.cpu)
    start = time.perf_counter()
    config = AlbertConfig(**json.loads(config_json))
    if train:
        args = argparse.Namespace(warmup=0, repeats=0)
        mlx_train_step(config, batch, seq, dtype, args, repeats=1)
    else:
        model = AlbertModel(config)
        model.set_dtype(getattr(mx, dtype))
        model.eval()
        ids, mask = (mx.array(a) for a in inputs(batch, seq))
        mx.eval(model(ids, attention_mask=mask).last_hidden_state)
    return time.perf_counter() - start


def run_first(config, batch, seq, dtype, device, train: bool) -> float:
    fields = {f: getattr(config, f) for f in ("vocab_size", "embedding_size", "activation", *SHAPES["base"])}
    spec = json.dumps([json.dumps(fields), batch, seq, dtype, device, train])
    done = subprocess.run([sys.executable, __file__, "--first-worker", spec], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"first-result worker failed: {done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def activation_bound(model, config, batch: int, seq: int, itemsize: int) -> int:
    """Bytes no forward can go below: the weights + one layer's input, FFN activation and output."""
    from mlx.utils import tree_flatten

    weights = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    return weights + batch * seq * (2 * config.hidden_size + config.intermediate_size) * itemsize


def mlx_forward(config, batch, seq, dtype, bits, args):
    mx.random.seed(0)
    model = AlbertModel(config)
    if bits:
        nn.quantize(model, group_size=64, bits=bits)
    model.set_dtype(getattr(mx, dtype))
    model.eval()
    fuse_qkv(model, args.fuse_qkv)
    mx.eval(model.parameters())
    ids, mask = (mx.array(a) for a in inputs(batch, seq))
    mask = mask if PADDED else None
    fn = lambda: mx.eval(model(ids, attention_mask=mask, check_inputs=False).last_hidden_state)  # noqa: E731
    mx.reset_peak_memory()
    seconds = timeit(fn, args.warmup, args.repeats)
    bound = activation_bound(model, config, batch, seq, getattr(mx, dtype).size)
    return seconds, mx.get_peak_memory(), bound


def fuse_qkv(model, on: bool) -> None:
    model.apply_to_modules(lambda _, m: setattr(m, "fuse_qkv", on) if hasattr(m, "fuse_qkv") else None)


def mlx_train_step(config, batch, seq, dtype, args, repeats: int | None = None):
    """One step as `mlx-albert train` runs it: the Trainer's compiled value_and_grad + clip + AdamW."""
    from mlx_albert.training import Trainer, TrainingArgs
    from mlx_albert.training.data import Dataset

    mx.random.seed(0)
    model = AlbertForSequenceClassification(config)  # float32 weights; half dtypes as --mixed-precision
    model.train()
    fuse_qkv(model, getattr(args, "fuse_qkv", False))
    ids, mask = inputs(batch, seq)
    features = [
        {"input_ids": list(i[m > 0]), "token_type_ids": [0] * int(m.sum()), "labels": int(n % 2)}
        for n, (i, m) in enumerate(zip(ids, mask, strict=True))
    ]
    trainer = Trainer(
        model,
        None,
        TrainingArgs(
            learning_rate=1e-5,
            progress=False,
            max_grad_norm=0,
            mixed_precision=None if dtype == "float32" else dtype,
        ),
        Dataset("sequence_classification", features),
    )
    arrays = {
        "input_ids": mx.array(ids),
        "attention_mask": mx.array(mask),
        "token_type_ids": mx.zeros_like(mx.array(ids)),
        "labels": mx.array(np.arange(batch) % 2),
    }
    step = lambda: trainer._step([arrays])  # noqa: E731  (evaluates loss, weights and optimiser state)

    mx.reset_peak_memory()
    if repeats is not None:  # the first step alone (time-to-first-result)
        step()
        return None
    seconds = timeit(step, 1, max(2, args.repeats // 2))
    return seconds, mx.get_peak_memory(), train_bound(model, config, batch, seq, getattr(mx, dtype).size)


def torch_setup(hf_config, dtype, impl, device, head=False):
    import torch
    import transformers

    hf = transformers.AlbertConfig(**hf_config, attn_implementation=impl)
    torch.manual_seed(0)
    cls = transformers.AlbertForSequenceClassification if head else transformers.AlbertModel
    model = cls(hf).to(device=device, dtype=getattr(torch, dtype))
    return model


def torch_forward(config, batch, seq, dtype, impl, device, args):
    import torch

    compiled = impl.endswith("+compile")
    model = torch_setup(config, dtype, impl.removesuffix("+compile"), device).eval()
    if compiled:
        model = torch.compile(model)
    ids, mask = (torch.tensor(a, dtype=torch.long, device=device) for a in inputs(batch, seq))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def fn():
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask)
        sync()

    return timeit(fn, args.warmup + (2 if compiled else 0), args.repeats)


def torch_train_step(config, batch, seq, dtype, impl, device, args):
    import torch

    model = torch_setup(config, dtype, impl, device, head=True).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids, mask = (torch.tensor(a, dtype=torch.long, device=device) for a in inputs(batch, seq))
    labels = torch.tensor(np.arange(batch) % 2, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        optimizer.zero_grad()
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        sync()

    return timeit(step, 1, max(2, args.repeats // 2))


def torch_worker(spec: str) -> None:
    """Runs one transformers measurement described by a JSON spec; prints seconds."""
    global PADDED
    job = json.loads(spec)
    PADDED = job["padded"]
    args = argparse.Namespace(warmup=job["warmup"], repeats=job["repeats"])
    fn = torch_train_step if job["train"] else torch_forward
    print(
        json.dumps(
            fn(job["config"], job["batch"], job["seq"], job["dtype"], job["impl"], job["device"], args)
        )
    )


def run_torch(config, batch, seq, dtype, impl, device, args, train=False) -> float:
    spec = dict(
        config=config.to_hf(),
        batch=batch,
        seq=seq,
        dtype=dtype,
        impl=impl,
        device=device,
        warmup=args.warmup,
        repeats=args.repeats,
        train=train,
        padded=PADDED,
    )
    env = dict(os.environ, MLX_ALBERT_BLAS="0")
    done = subprocess.run(
        [sys.executable, __file__, "--torch-worker", json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"transformers worker failed: {done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--models", default="base")
    p.add_argument("--batch", default="1,8")
    p.add_argument("--seq", default="128")
    p.add_argument("--dtypes", default="float32")
    p.add_argument("--quant", default="", help="comma-separated bits to also run quantized, e.g. 4,8")
    p.add_argument(
        "--torch",
        default="eager,sdpa",
        help="transformers attention implementations "
        "(add +compile for torch.compile, '' to skip transformers)",
    )
    p.add_argument("--train", action="store_true", help="also time one fine-tuning step")
    p.add_argument(
        "--first",
        action="store_true",
        help="also time load + first forward (and first train step) in a fresh process",
    )
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="the device's dense peak: adds its fraction"
    )
    p.add_argument("--fuse-qkv", action="store_true", help="one H -> 3H projection for q, k, v")
    p.add_argument("--no-padding", action="store_true", help="full rows, forward without a mask")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="bench_results")
    args = p.parse_args(argv)
    global PADDED
    PADDED = not args.no_padding
    mx.set_default_device(mx.gpu if args.device == "gpu" else mx.cpu)
    tdev = "cuda" if args.device == "gpu" else "cpu"
    impls = [i for i in args.torch.split(",") if i]
    first_dtype = args.dtypes.split(",")[0]  # quantized and training rows use it
    rows = []
    for shape in args.models.split(","):
        config = config_for(shape)
        for seq in map(int, args.seq.split(",")):
            for batch in map(int, args.batch.split(",")):
                variants = [(d, None) for d in args.dtypes.split(",")]
                variants += [(first_dtype, int(b)) for b in args.quant.split(",") if b]
                for dtype, bits in variants:
                    seconds, peak, bound = mlx_forward(config, batch, seq, dtype, bits, args)
                    row = _row(shape, "forward", batch, seq, dtype, bits, seconds, peak)
                    row["bound_mb"] = bound / 2**20
                    _flops(row, forward_flops(config, batch, seq), args.peak_tflops)
                    if bits is None:
                        for impl in impls:
                            row[f"torch_{impl}_ms"] = (
                                run_torch(config, batch, seq, dtype, impl, tdev, args) * 1e3
                            )
                    rows.append(row)
                    print(_fmt(row), flush=True)
                if args.first:
                    for train in (False, True) if args.train else (False,):
                        seconds = run_first(config, batch, seq, first_dtype, args.device, train)
                        task = "first train step" if train else "first forward"
                        row = _row(shape, task, batch, seq, first_dtype, None, seconds, 0.0)
                        rows.append(row)
                        print(_fmt(row), flush=True)
                if args.train:
                    seconds, peak, bound = mlx_train_step(config, batch, seq, first_dtype, args)
                    row = _row(shape, "train step", batch, seq, first_dtype, None, seconds, peak)
                    row["bound_mb"] = bound / 2**20
                    _flops(row, 3 * forward_flops(config, batch, seq), args.peak_tflops)
                    if impls:
                        row["torch_eager_ms"] = (
                            run_torch(config, batch, seq, first_dtype, "eager", tdev, args, True) * 1e3
                        )
                    rows.append(row)
                    print(_fmt(row), flush=True)
    write(rows, args)


def _flops(row: dict, flops: float, peak_tflops: float | None) -> None:
    row["tflops"] = flops / (row["mlx_ms"] / 1e3) / 1e12
    if peak_tflops:
        row["of_peak"] = row["tflops"] / peak_tflops


def _row(model, task, batch, seq, dtype, bits, seconds, peak) -> dict:
    return dict(
        model=model,
        batch=batch,
        seq=seq,
        dtype=dtype,
        quant=bits,
        task=task,
        mlx_ms=seconds * 1e3,
        tokens_per_s=batch * seq / seconds,
        peak_mb=peak / 2**20,
    )


def _fmt(row):
    torch_cols = " ".join(
        f"{k[6:-3]}={v:.1f}ms ({v / row['mlx_ms']:.2f}x)" for k, v in row.items() if k.startswith("torch_")
    )
    q = f" q{row['quant']}" if row["quant"] else ""
    return (
        f"{row['model']} {row['task']} B={row['batch']} L={row['seq']} {row['dtype']}{q}: "
        f"mlx {row['mlx_ms']:.1f} ms, peak {row['peak_mb']:.0f} MB | {torch_cols}"
    )


def environment(args) -> dict:
    import mlx_albert._blas as blas

    env = dict(
        date=str(date.today()),
        machine=platform.machine(),
        processor=platform.processor(),
        system=platform.platform(),
        python=platform.python_version(),
        mlx=mx.__version__,
        device=str(mx.default_device()),
        blas=blas.loaded or "bundled/system default",
        fuse_qkv=args.fuse_qkv,
        padded=PADDED,
    )
    try:
        import torch
        import transformers

        env.update(
            torch=torch.__version__,
            transformers=transformers.__version__,
            torch_threads=torch.get_num_threads(),
        )
        if args.device == "gpu":
            env["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    return env


def write(rows, args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = environment(args)
    (out / f"bench-{args.device}.json").write_text(json.dumps(dict(environment=env, rows=rows), indent=2))
    torch_keys = sorted({k for r in rows for k in r if k.startswith("torch_")})
    head = [
        "model",
        "task",
        "batch",
        "seq",
        "dtype",
        "mlx ms",
        "tokens/s",
        "TFLOP/s",
        "of peak",
        "peak MB",
        "bound MB",
    ]
    head += [f"{k[6:-3]} ms" for k in torch_keys] + [f"speed-up vs {k[6:-3]}" for k in torch_keys]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        dtype = r["dtype"] + (f" q{r['quant']}" if r["quant"] else "")
        cells = [
            r["model"],
            r["task"],
            r["batch"],
            r["seq"],
            dtype,
            f"{r['mlx_ms']:.1f}",
            f"{r['tokens_per_s']:.0f}",
            f"{r['tflops']:.2f}" if "tflops" in r else "",
            f"{r['of_peak']:.0%}" if "of_peak" in r else "",
            f"{r['peak_mb']:.0f}" if r["peak_mb"] else "",
            f"{r['bound_mb']:.0f}" if "bound_mb" in r else "",
        ]
        cells += [f"{r[k]:.1f}" if k in r else "" for k in torch_keys]
        cells += [f"{r[k] / r['mlx_ms']:.2f}x" if k in r else "" for k in torch_keys]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    table = "\n".join(lines)
    text = "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()) + "\n\n" + table + "\n"
    (out / f"bench-{args.device}.md").write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    if "--torch-worker" in sys.argv:
        torch_worker(sys.argv[sys.argv.index("--torch-worker") + 1])
    elif "--first-worker" in sys.argv:
        print(first_result(*json.loads(sys.argv[sys.argv.index("--first-worker") + 1])))
    else:
        main()
