"""DMLoss forward+backward against F.cross_entropy forward+backward, CPU float32.

Both are timed in the same run on the same logits; the table gives medians over repeats and
the ratio DMLoss / cross_entropy (target: <= 1.5 at every size). Results: benchmarks/RESULTS.md.

    python benchmarks/bench_loss.py [--repeats 200] [--threads N]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from dm_search import EDF, DMLoss

SIZES = [(256, 10), (1024, 100), (512, 1000), (4096, 10)]


def _median_s(step: Callable[[], None], repeats: int, warmup: int = 20) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dm = DMLoss(EDF("dm", lam=0.5, beta=8.0))
    gen = torch.Generator().manual_seed(0)

    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} threads, median of {args.repeats} runs")
    print(f"{'N x C':>12} | {'cross_entropy us':>16} | {'DMLoss us':>10} | ratio")
    worst = 0.0
    for n, c in SIZES:
        base = torch.randn(n, c, generator=gen) * 3
        target = torch.randint(0, c, (n,), generator=gen)
        x_ce = base.clone().requires_grad_()
        x_dm = base.clone().requires_grad_()

        def ce_step(x: torch.Tensor = x_ce, t: torch.Tensor = target) -> None:
            x.grad = None
            F.cross_entropy(x, t).backward()

        def dm_step(x: torch.Tensor = x_dm, t: torch.Tensor = target) -> None:
            x.grad = None
            dm(x, t).backward()

        # Interleave so that drift in machine load hits both alike.
        ce_t, dm_t = [], []
        for _ in range(5):
            ce_t.append(_median_s(ce_step, args.repeats // 5))
            dm_t.append(_median_s(dm_step, args.repeats // 5))
        ce_s, dm_s = statistics.median(ce_t), statistics.median(dm_t)
        ratio = dm_s / ce_s
        worst = max(worst, ratio)
        print(f"{f'{n} x {c}':>12} | {ce_s * 1e6:16.1f} | {dm_s * 1e6:10.1f} | {ratio:.2f}")
    print(f"worst ratio: {worst:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
