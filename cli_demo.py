"""`slimgraph demo prune`: structured pruning on real data, start to finish.

The built-in digit CNN trains on scikit-learn's bundled 8x8 digits (no download; 1400 images to
train, the other 397 to test), `slimgraph.prune` removes `--ratio` of its channels in place, a
short fine-tune recovers the accuracy, and the pruned model compiles; the table reports test
accuracy unpruned, pruned, fine-tuned and of the compiled library, with parameters and MACs.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

TRAIN = 1400
BATCH = 50


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as exc:
        from slimgraph.ir.errors import SlimgraphError

        raise SlimgraphError("demo prune needs scikit-learn for its bundled digits: pip install scikit-learn") from exc
    digits = sklearn_digits()
    return torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1), torch.tensor(digits.target)


def train(model, images, labels, epochs: int, lr: float) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for start in range(0, len(labels), BATCH):
            loss = torch.nn.functional.cross_entropy(model(images[start:start + BATCH]), labels[start:start + BATCH])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()


def accuracy(predict, images, labels) -> float:
    with torch.no_grad():
        return float((predict(images).argmax(1) == labels).float().mean())


def run_demo(ratio: float = 0.5, epochs: int = 10, finetune_epochs: int = 5, seed: int = 0, console=None) -> dict:
    """Train, prune, fine-tune, compile; returns the accuracies and sizes (the table's rows)."""
    import slimgraph
    from slimgraph.models import DigitCNN

    images, labels = load_digits()
    train_x, train_y, test_x, test_y = images[:TRAIN], labels[:TRAIN], images[TRAIN:], labels[TRAIN:]
    torch.manual_seed(seed)
    model = DigitCNN()
    started = time.perf_counter()
    train(model, train_x, train_y, epochs, 3e-3)
    result = {"train_seconds": time.perf_counter() - started, "unpruned": accuracy(model, test_x, test_y)}
    report = slimgraph.prune(model, (test_x[:1],), ratio=ratio, importance="l2")
    result["pruned"] = accuracy(model, test_x, test_y)
    train(model, train_x, train_y, finetune_epochs, 1e-3)
    result["fine-tuned"] = accuracy(model, test_x, test_y)
    compiled = slimgraph.compile(model, (test_x[:1],))
    logits = np.stack([np.asarray(compiled(test_x[i:i + 1].numpy())[0])[0] for i in range(len(test_y))])
    result["compiled"] = float((logits.argmax(1) == test_y.numpy()).mean())
    result["parameters"], result["macs"], result["notes"] = report.parameters, report.macs, report.notes
    if console is not None:
        _print(console, result, ratio)
    return result


def _print(console, result: dict, ratio: float) -> None:
    from rich.table import Table

    table = Table(title=f"digit CNN on scikit-learn digits (397 test images), prune ratio {ratio}")
    table.add_column("stage")
    table.add_column("test accuracy", justify="right")
    for stage in ("unpruned", "pruned", "fine-tuned", "compiled"):
        table.add_row(stage, f"{100 * result[stage]:.1f} %")
    console.print(table)
    (params_before, params_after), (macs_before, macs_after) = result["parameters"], result["macs"]
    console.print(f"parameters {params_before:,} -> {params_after:,}; MACs {macs_before:,} -> {macs_after:,}")


def demo(args) -> int:
    from rich.console import Console

    from slimgraph.ir.errors import SlimgraphError

    if not 0 < args.ratio < 1:  # before the training, not after it
        raise SlimgraphError(f"demo prune: --ratio must be in (0, 1), got {args.ratio}")
    run_demo(args.ratio, args.epochs, args.finetune_epochs, args.seed, Console())
    return 0


def add_demo_parser(commands) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "demo", help="worked examples on real data: `demo prune` (train, prune, fine-tune, compile the digit CNN)")
    parser.add_argument("demo", choices=["prune"])
    parser.add_argument("--ratio", type=float, default=0.5, help="share of channels to remove")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs before pruning")
    parser.add_argument("--finetune-epochs", type=int, default=5, help="fine-tuning epochs after pruning")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=demo)
