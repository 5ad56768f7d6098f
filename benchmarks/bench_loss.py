"""DMLoss forward+backward against F.cross_entropy forward+backward, CPU float32.

The eager DMLoss and the fused one (``DMLoss(..., compile=True)``) are timed in the same run,
on the same logits, interleaved with cross_entropy; the table gives medians over repeats, the
ratios to cross_entropy and the fused path's compile time per shape. Targets: fused <= 1.2x
cross_entropy at every size (eager: <= 1.5x). Results: benchmarks/RESULTS.md.

    python benchmarks/bench_loss.py [--repeats 200] [--threads N] [--runs 3]

``--runs`` repeats the whole table in one process (the compiled kernels are reused, as in a
worker) and prints the median ratio of the runs.
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


def _table(args: argparse.Namespace, gen: torch.Generator) -> list[tuple[float, float]]:
    edf = EDF("dm", lam=0.5, beta=8.0)
    eager, fused = DMLoss(edf), DMLoss(edf, compile=True)
    print(f"{'N x C':>12} | {'cross_entropy us':>16} | {'eager us':>9} | {'fused us':>9} | "
          f"{'eager/CE':>8} | {'fused/CE':>8} | compile s")
    ratios = []
    for n, c in SIZES:
        base = torch.randn(n, c, generator=gen) * 3
        target = torch.randint(0, c, (n,), generator=gen)
        xs = [base.clone().requires_grad_() for _ in range(3)]
        t0 = time.perf_counter()
        fused(xs[2], target).backward()  # compiles on the first run, reuses after
        compile_s = time.perf_counter() - t0

        def step(fn: Callable[..., torch.Tensor], x: torch.Tensor,
                 t: torch.Tensor = target) -> Callable[[], None]:
            def run() -> None:
                x.grad = None
                fn(x, t).backward()
            return run

        steps = [step(F.cross_entropy, xs[0]), step(eager, xs[1]), step(fused, xs[2])]
        # Interleave so that drift in machine load hits all three alike.
        times: list[list[float]] = [[], [], []]
        for _ in range(5):
            for i, s in enumerate(steps):
                times[i].append(_median_s(s, args.repeats // 5))
        ce_s, dm_s, fu_s = (statistics.median(t) for t in times)
        ratios.append((dm_s / ce_s, fu_s / ce_s))
        print(f"{f'{n} x {c}':>12} | {ce_s * 1e6:16.1f} | {dm_s * 1e6:9.1f} | {fu_s * 1e6:9.1f} | "
              f"{dm_s / ce_s:8.2f} | {fu_s / ce_s:8.2f} | {compile_s:.1f}")
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)

    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} threads, median of {args.repeats} repeats, {args.runs} run(s)")
    runs = []
    for r in range(args.runs):
        print(f"## run {r + 1}")
        runs.append(_table(args, gen))
    print("## median over runs")
    worst = 0.0
    for i, (n, c) in enumerate(SIZES):
        eager_r = statistics.median(run[i][0] for run in runs)
        fused_r = statistics.median(run[i][1] for run in runs)
        worst = max(worst, fused_r)
        print(f"{f'{n} x {c}':>12} | eager/CE {eager_r:.2f} | fused/CE {fused_r:.2f}")
    print(f"worst fused ratio: {worst:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
