"""Time per line of `mlx-albert embed --file ... --output ...` on the bundled tiny model: the whole
command (start-up, tokenisation, batches, .npy write) over generated lines, per batch size, and the
peak memory. Prints a Markdown table and writes JSON.

    python benchmarks/embed_file.py                       # 20,000 lines, batch sizes 8, 32, 64
    python benchmarks/embed_file.py --lines 5000 --batch 64 --out bench_results"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = "the cat sat on a mat and then the dog ran far away from home to see the river again".split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--batch", default="8,32,64", help="comma-separated batch sizes")
    parser.add_argument("--model", default=str(ROOT / "models" / "tiny-albert"))
    parser.add_argument("--out", default="bench_results", help="folder for embed_file.json")
    args = parser.parse_args()
    rng = random.Random(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "lines.txt"
        text.write_text(
            "".join(" ".join(rng.choices(WORDS, k=rng.randint(5, 30))) + "\n" for _ in range(args.lines))
        )
        for batch in [int(b) for b in args.batch.split(",")]:
            start = time.perf_counter()
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "mlx_albert",
                    "embed",
                    "--model",
                    args.model,
                    "--file",
                    str(text),
                    "--output",
                    str(Path(tmp) / "v.npy"),
                    "--force",
                    "--batch-size",
                    str(batch),
                    "--no-progress",
                ],
                check=True,
                cwd=tmp,
                capture_output=True,
            )
            seconds = time.perf_counter() - start
            peak = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024
            rows.append(
                {
                    "batch": batch,
                    "lines": args.lines,
                    "seconds": seconds,
                    "ms_per_line": 1e3 * seconds / args.lines,
                    "peak_mb": peak,
                }
            )
    print(
        f"embed --file on {Path(args.model).name}, {args.lines} lines, "
        f"{platform.processor() or platform.machine()}"
    )
    print("| batch | seconds | ms / line | peak MB |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['batch']} | {r['seconds']:.2f} | {r['ms_per_line']:.3f} | {r['peak_mb']:.0f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "embed_file.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
