"""Overhead of run_trial: its epoch time against a minimal hand-written PyTorch loop.

Same prepared data (MNIST-1D, 40% symmetric noise), same 1-D CNN and initialisation, same
batch size, SGD settings, DMLoss and cosine schedule; both evaluate clean validation and test
accuracy after every epoch. run_trial is timed without (like for like) and with its
training-set diagnostics pass. Runs alternate so that machine load hits all alike.
Target: run_trial (no diagnostics) / hand loop <= 1.10.

``compile: true`` (torch.compile'd model, fused DMLoss) is timed too, diagnostics off, against
the same eager run: its steady epoch time (epochs after the first two, which compile) and what
the compiling epochs cost on top.

    python benchmarks/bench_trainer.py [--epochs 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch

from dm_search.loss import DMLoss
from dm_search.training.config import load_trial_config
from dm_search.training.data import PreparedData, prepare_data
from dm_search.training.models import create_model
from dm_search.training.trainer import run_trial


def hand_loop(cfg, data: PreparedData, epochs: int) -> float:
    """Seconds per epoch of the plainest loop that does the same work."""
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model.name, data.input_shape, data.num_classes)
    o = cfg.optim
    opt = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum,
                          weight_decay=o.weight_decay)
    loss_fn = DMLoss(cfg.loss.build_edf(), normalise=cfg.loss.normalise)
    x, y = data.x_train, data.y_train
    bs = o.batch_size
    steps = len(y) // bs
    total = steps * epochs
    g = torch.Generator().manual_seed(1)
    t0 = time.perf_counter()
    step = 0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(y), generator=g)
        for b in range(steps):
            for group in opt.param_groups:
                group["lr"] = o.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            idx = perm[b * bs:(b + 1) * bs]
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        model.eval()
        with torch.inference_mode():
            for xe, ye in ((data.x_val, data.y_val), (data.x_test, data.y_test)):
                (model(xe).argmax(1) == ye).float().mean().item()
    return (time.perf_counter() - t0) / epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--config", default="examples/mnist1d_dm.yaml")
    args = ap.parse_args()
    threads = torch.get_num_threads()
    base = load_trial_config(args.config, [f"optim.epochs={args.epochs}", f"threads={threads}"])
    no_diag = load_trial_config(args.config, [f"optim.epochs={args.epochs}",
                                              f"threads={threads}", "diagnostics=false"])
    compiled = load_trial_config(args.config, [f"optim.epochs={args.epochs}",
                                               f"threads={threads}", "diagnostics=false",
                                               "compile=true"])
    data = prepare_data(base.data)
    hand, lean, full, comp, comp_extra = [], [], [], [], []
    for _ in range(args.repeats):
        hand.append(hand_loop(base, data, args.epochs))
        lean_h = run_trial(no_diag, data=data).history
        lean.append(statistics.mean(m["epoch_s"] for m in lean_h))
        full.append(statistics.mean(m["epoch_s"] for m in run_trial(base, data=data).history))
        # The first epoch compiles the training shapes, the second the evaluation ones (the
        # model in eval mode) and the last short batch; later epochs reuse them all.
        comp_h = [m["epoch_s"] for m in run_trial(compiled, data=data).history]
        steady = statistics.mean(comp_h[2:])
        comp.append(steady)
        comp_extra.append(sum(comp_h[:2]) - 2 * steady)
    h, le, f, c = (statistics.median(v) for v in (hand, lean, full, comp))
    print(f"# {platform.machine()}, {threads} threads, torch {torch.__version__}; {args.config}, "
          f"{len(data.y_train)} training examples, batch {base.optim.batch_size}, "
          f"{args.epochs} epochs, median of {args.repeats} runs")
    print("| loop | s/epoch | ratio to hand loop |")
    print("| --- | --- | --- |")
    print(f"| hand-written loop | {h:.4f} | 1.00 |")
    print(f"| run_trial, diagnostics off | {le:.4f} | {le / h:.2f} |")
    print(f"| run_trial, diagnostics on | {f:.4f} | {f / h:.2f} |")
    print(f"| run_trial, diagnostics off, compile: true (epochs 3+) | {c:.4f} | {c / h:.2f} |")
    print(f"ratio (diagnostics off): {le / h:.2f} (target <= 1.10)")
    print(f"compiled / eager epoch time: {c / le:.2f}; compiling cost "
          f"{statistics.median(comp_extra):.1f} s once per trial (median)")


if __name__ == "__main__":
    main()
