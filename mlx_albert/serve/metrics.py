"""The server's counters in Prometheus' text format: requests and errors by path and status, the
queue depth, batch sizes and a latency histogram."""

from __future__ import annotations

import bisect
from collections import Counter

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    def __init__(self, bounds: tuple[float, ...]):
        self.bounds, self.counts, self.sum, self.count = bounds, [0] * len(bounds), 0.0, 0

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.bounds, value)
        if i < len(self.bounds):
            self.counts[i] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, total = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            total += n
            out.append(f'{name}_bucket{{le="{bound}"}} {total}')
        out += [
            f'{name}_bucket{{le="+Inf"}} {self.count}',
            f"{name}_sum {self.sum:.6f}",
            f"{name}_count {self.count}",
        ]
        return out


class Metrics:
    def __init__(self):
        self.requests: Counter = Counter()  # (path, status) -> count
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.batch_tokens = 0

    def request(self, path: str, status: int, seconds: float) -> None:
        self.requests[(path, status)] += 1
        self.latency.observe(seconds)

    def batch(self, size: int, tokens: int) -> None:
        self.batch_size.observe(size)
        self.batch_tokens += tokens

    def render(self, queue_depth: int) -> str:
        lines = ["# TYPE mlx_albert_requests_total counter"]
        lines += [
            f'mlx_albert_requests_total{{path="{p}",status="{s}"}} {n}'
            for (p, s), n in sorted(self.requests.items())
        ]
        errors = sum(n for (_, s), n in self.requests.items() if s >= 400)
        lines += ["# TYPE mlx_albert_errors_total counter", f"mlx_albert_errors_total {errors}"]
        lines += ["# TYPE mlx_albert_queue_depth gauge", f"mlx_albert_queue_depth {queue_depth}"]
        lines += ["# TYPE mlx_albert_batch_size histogram", *self.batch_size.lines("mlx_albert_batch_size")]
        lines += [
            "# TYPE mlx_albert_batch_tokens_total counter",
            f"mlx_albert_batch_tokens_total {self.batch_tokens}",
        ]
        lines += [
            "# TYPE mlx_albert_request_seconds histogram",
            *self.latency.lines("mlx_albert_request_seconds"),
        ]
        return "\n".join(lines) + "\n"
