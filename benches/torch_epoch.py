"""Seconds per training epoch of mnist-cnn-v3 in PyTorch on the CPU, to set beside `train`'s.

usage: torch_epoch.py MNIST_DIR [EPOCHS] [--batch-norm]

The network and step are ours: 5x5/2 conv 1->32, 3x3/2 conv 32->64, 3x3/2 conv 64->64 (each with a
batch norm before its ReLU under --batch-norm), dense 1024->128, dropout 0.25, dense 128->10; AdamW (weight decay
1e-4), batch 128, random shifts of up to 2 px. The rate is 1e-2 with batch norm and 3e-3 without,
constant: the schedule does not change an epoch's time. No distortion: `train` makes its distorted
batches on a thread of its own, so compare with `train --augment 0` (README, "Training").

Not part of `make test`: torch is a few GB from PyPI. Set-up:
  python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install torch numpy
  /tmp/torch-venv/bin/python benches/torch_epoch.py "$MNIST_DIR" 2 --batch-norm
Adapted from the shared peer script (peers/torch/v2_epoch.py), which has the af2275c recipe.
"""
import gzip, os, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

args = [a for a in sys.argv[1:] if not a.startswith("--")]
batch_norm = "--batch-norm" in sys.argv
d = args[0]
epochs = int(args[1]) if len(args) > 1 else 1


def idx(name):
    path = os.path.join(d, name)
    b = gzip.open(path + ".gz").read() if os.path.exists(path + ".gz") else open(path, "rb").read()
    nd = b[3]
    dims = [int.from_bytes(b[4 + 4 * i : 8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(b[4 + 4 * nd :], np.uint8).reshape(dims)


def images(name):
    x = (idx(name) / 255.0 - 0.1307) / 0.3081
    return torch.tensor(x, dtype=torch.float32).unsqueeze(1)


xtr, ytr = images("train-images-idx3-ubyte"), torch.tensor(idx("train-labels-idx1-ubyte"), dtype=torch.long)
xte, yte = images("t10k-images-idx3-ubyte"), torch.tensor(idx("t10k-labels-idx1-ubyte"), dtype=torch.long)
torch.manual_seed(1)


class Net(nn.Module):
    def __init__(s):
        super().__init__()
        s.c1 = nn.Conv2d(1, 32, 5, 2, 2)
        s.c2 = nn.Conv2d(32, 64, 3, 2, 1)
        s.c3 = nn.Conv2d(64, 64, 3, 2, 1)
        s.n1 = nn.BatchNorm2d(32) if batch_norm else nn.Identity()
        s.n2 = nn.BatchNorm2d(64) if batch_norm else nn.Identity()
        s.n3 = nn.BatchNorm2d(64) if batch_norm else nn.Identity()
        s.f1 = nn.Linear(1024, 128)
        s.f2 = nn.Linear(128, 10)
        s.dp = nn.Dropout(0.25)

    def forward(s, x):
        x = F.relu(s.n2(s.c2(F.relu(s.n1(s.c1(x))))))
        x = F.relu(s.n3(s.c3(x))).flatten(1)
        return s.f2(s.dp(F.relu(s.f1(x))))


net = Net()
opt = torch.optim.AdamW(net.parameters(), 1e-2 if batch_norm else 3e-3, weight_decay=1e-4)
for ep in range(epochs):
    net.train()
    t = time.time()
    perm = torch.randperm(60000)
    for i in range(0, 60000, 128):
        b = perm[i : i + 128]
        dx, dy = np.random.randint(-2, 3, 2)
        x = torch.roll(xtr[b], shifts=(int(dy), int(dx)), dims=(2, 3))
        loss = F.cross_entropy(net(x), ytr[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    dt = time.time() - t
    net.eval()
    with torch.no_grad():
        acc = (net(xte).argmax(1) == yte).float().mean().item() * 100
    print(f"epoch {ep + 1}: {dt:.2f} s, test {acc:.2f}% (threads {torch.get_num_threads()}, batch norm {batch_norm})", flush=True)
