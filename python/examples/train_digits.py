#!/usr/bin/env python3
"""A small CNN on scikit-learn's digits (1797 8x8 images), trained twice from the same seed and
in the same data order: once on PyTorch's convolutions, once with convkit.torch.enable() (the same
code, convkit computing aten::convolution and its backward). Prints the two loss and accuracy
curves side by side and the largest loss difference.

    PYTHONPATH=build/python python3 python/examples/train_digits.py --epochs 10
    PYTHONPATH=build/python python3 python/examples/train_digits.py --device cuda

On CUDA the comparison runs with TF32 off and deterministic algorithms on (--tf32 and
--nondeterministic lift them; convkit follows PyTorch's flags either way).
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import convkit.torch as ckt


def load_data(seed=0, device="cpu"):
    """(x_train [N,1,8,8], y_train, x_test, y_test): pixels scaled to [0, 1], a stratified 75/25
    split with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype("float32") / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(images, digits.target, test_size=0.25,
                                              random_state=seed, stratify=digits.target)
    as_x = lambda a: torch.tensor(a, device=device).unsqueeze(1)
    as_y = lambda a: torch.tensor(a, dtype=torch.long, device=device)
    return as_x(x_tr), as_y(y_tr), as_x(x_te), as_y(y_te)


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),   # 16 x 8 x 8
        nn.Conv2d(16, 32, 3), nn.ReLU(),             # 32 x 6 x 6
        nn.MaxPool2d(2),                             # 32 x 3 x 3
        nn.Flatten(), nn.Linear(32 * 3 * 3, 10))


def accuracy(model, x, y, batch_size=512):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            correct += (model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
    model.train()
    return correct / x.shape[0]


def train(use_convkit, epochs=5, seed=0, device="cpu", batch_size=32, lr=0.05, data=None):
    """Train from scratch; returns {'losses': mean training loss per epoch, 'train_acc',
    'test_acc': accuracies after each epoch, 'seconds', 'stats': convkit.torch.stats() of the run}.
    The seed fixes the initialisation and the shuffling, so both modes see the same batches."""
    x_tr, y_tr, x_te, y_te = data if data is not None else load_data(seed, device)
    model = make_model(seed).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    order = torch.Generator().manual_seed(seed)
    result = {"losses": [], "train_acc": [], "test_acc": []}
    ckt.reset_stats()
    start = time.perf_counter()
    with ckt.enabled(use_convkit):
        for _ in range(epochs):
            perm = torch.randperm(x_tr.shape[0], generator=order).to(device)
            total, batches = 0.0, 0
            for i in range(0, x_tr.shape[0], batch_size):
                idx = perm[i:i + batch_size]
                loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item()
                batches += 1
            result["losses"].append(total / batches)
            result["train_acc"].append(accuracy(model, x_tr, y_tr))
            result["test_acc"].append(accuracy(model, x_te, y_te))
    if device != "cpu":
        torch.cuda.synchronize()
    result["seconds"] = time.perf_counter() - start
    result["stats"] = ckt.stats()
    return result


def compare(epochs=5, seed=0, device="cpu", batch_size=32, lr=0.05):
    """Both runs on the same data; returns (pytorch result, convkit result, max |loss diff|)."""
    data = load_data(seed, device)
    ref = train(False, epochs, seed, device, batch_size, lr, data)
    got = train(True, epochs, seed, device, batch_size, lr, data)
    diff = max(abs(a - b) for a, b in zip(ref["losses"], got["losses"]))
    return ref, got, diff


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--tf32", action="store_true", help="CUDA: leave TF32 on (not comparable bitwise)")
    ap.add_argument("--nondeterministic", action="store_true", help="CUDA: leave cuDNN free to pick")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cudnn.deterministic = not args.nondeterministic
    ref, got, diff = compare(args.epochs, args.seed, args.device, args.batch_size, args.lr)
    print("digits CNN, %d epochs, batch %d, SGD lr %g momentum 0.9, device %s, torch %s"
          % (args.epochs, args.batch_size, args.lr, args.device, torch.__version__))
    print("%5s  %12s %12s %10s  %9s %9s  %9s %9s" % ("epoch", "loss torch", "loss convkit", "|diff|",
                                                   "train pt", "train ck", "test pt", "test ck"))
    for e in range(args.epochs):
        print("%5d  %12.6f %12.6f %10.2e  %9.4f %9.4f  %9.4f %9.4f" % (
            e + 1, ref["losses"][e], got["losses"][e], abs(ref["losses"][e] - got["losses"][e]),
            ref["train_acc"][e], got["train_acc"][e], ref["test_acc"][e], got["test_acc"][e]))
    print("max |loss difference|: %.3e" % diff)
    print("final test accuracy: pytorch %.2f%%, convkit %.2f%%"
          % (100 * ref["test_acc"][-1], 100 * got["test_acc"][-1]))
    print("time: pytorch %.2f s, convkit %.2f s" % (ref["seconds"], got["seconds"]))
    s = got["stats"]
    print("convkit computed %d forward and %d backward convolutions; fallbacks: %d forward, %d "
          "backward %s" % (s["forward"], s["backward"], s["fallback_forward"], s["fallback_backward"],
                           s["fallback_reasons"] or ""))


if __name__ == "__main__":
    main()
