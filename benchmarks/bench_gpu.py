"""Epoch time of ResNet-20 with DMLoss on CIFAR-10-sized data: eager, compiled, bf16.

Random tensors of CIFAR-10's shape (50,000 x 3 x 32 x 32, 10 classes) stand in for the data,
which cannot be downloaded where the benchmark runs; the arithmetic per epoch is the same. Each
mode trains ``--epochs`` epochs (batch 128, SGD momentum 0.9, DMLoss dm lam 0.5 beta 8) and
reports the median epoch time of the epochs after the first (which compiles), the first epoch's
extra time, and the ratio to eager fp32 measured in the same run:

- eager fp32: the model and DMLoss as they are;
- compiled fp32: ``torch.compile(model)`` and ``DMLoss(..., compile=True)`` (the trial option
  ``compile: true``);
- eager bf16 / compiled bf16: the same under ``torch.autocast(dtype=torch.bfloat16)``, as
  trials use on CUDA (``precision: auto``).

    python benchmarks/bench_gpu.py [--device cuda] [--epochs 4] [--samples 50000]
        [--out benchmarks/results/gpu.txt]

``--device cpu --samples 1024 --epochs 2`` checks the script itself on a machine without GPU.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from dm_search import EDF, DMLoss, __version__
from dm_search.training.models import create_model

MODES = [("eager fp32", False, False), ("compiled fp32", True, False),
         ("eager bf16", False, True), ("compiled bf16", True, True)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_mode(compiled: bool, bf16: bool, x: torch.Tensor, y: torch.Tensor, epochs: int,
             batch: int, device: torch.device) -> list[float]:
    """Seconds of each epoch."""
    torch.manual_seed(0)
    model = create_model("resnet20", tuple(x.shape[1:]), 10).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compiled else model
    loss_fn = DMLoss(EDF("dm", lam=0.5, beta=8.0), compile=compiled)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    g = torch.Generator(device="cpu").manual_seed(1)
    times = []
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g).to(device)
        _sync(device)
        t0 = time.perf_counter()
        for i in range(0, len(y), batch):
            idx = perm[i:i + batch]
            with amp:
                logits = net(x[idx])
            loss = loss_fn(logits.float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--samples", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--modes", default=",".join(m[0] for m in MODES),
                    help="comma-separated subset of: " + ", ".join(m[0] for m in MODES))
    ap.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = ap.parse_args()
    if args.epochs < 2:
        ap.error("--epochs must be at least 2: the first epoch compiles")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("no CUDA device here; use --device cpu to check the script")
    torch.backends.cudnn.benchmark = True
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.samples, 3, 32, 32, generator=g).to(device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.samples,), generator=g).to(device)
    card = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine())
    lines = [f"# {card}; torch {torch.__version__}, dm-search {__version__}, "
             f"Python {platform.python_version()}; ResNet-20, {args.samples} x 3 x 32 x 32, "
             f"batch {args.batch}, {args.epochs} epochs per mode (median of epochs 2+)",
             "| mode | s/epoch | first epoch extra s | ratio to eager fp32 |",
             "| --- | --- | --- | --- |"]
    print("\n".join(lines), flush=True)
    wanted = {m.strip() for m in args.modes.split(",")}
    reference = None
    for name, compiled, bf16 in MODES:
        if name not in wanted:
            continue
        times = run_mode(compiled, bf16, x, y, args.epochs, args.batch, device)
        steady = statistics.median(times[1:])
        reference = reference or (steady if name == "eager fp32" else None)
        ratio = f"{steady / reference:.2f}" if reference else "-"
        line = f"| {name} | {steady:.2f} | {times[0] - steady:.1f} | {ratio} |"
        lines.append(line)
        print(line, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
