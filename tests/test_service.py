"""The service without a transport: pieces of work, and a process that ran the service exits 0."""

import subprocess
import sys
import textwrap
from pathlib import Path

from mlx_albert.service.admission import pieces

TINY = Path(__file__).parent.parent / "models" / "tiny-albert"


def test_pieces_keep_order_and_bound_tokens():
    items, costs = list("abcdef"), [3, 3, 5, 1, 9, 1]
    got = pieces(items, costs, max_tokens=6)
    assert [p for p, _ in got] == [["a", "b"], ["c", "d"], ["e"], ["f"]]  # one item at least each
    assert [t for _, t in got] == [6, 6, 9, 1]


def test_a_process_that_ran_the_service_exits_cleanly():
    """The worker thread runs the model's compiled loop; its MLX streams must be gone before the
    interpreter exits, or the process aborts (SIGABRT) after the answer was written."""
    script = textwrap.dedent(f"""
        import asyncio
        from mlx_albert.service import Service, Settings
        from mlx_albert.service.models import load_models
        from mlx_albert.tasks import get

        async def main():
            service = Service(load_models({{"tiny": {str(TINY)!r}}}), Settings())
            await service.batcher.start()
            job = service.admit(get("fill-mask"), {{"inputs": "a [MASK] b", "top_k": 2}})
            print(len(await service.run(job)))
            await service.batcher.stop()

        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "2" and "terminate called" not in done.stderr
