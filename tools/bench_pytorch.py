#!/usr/bin/env python3
"""The PyTorch side of vit_bench's CPU comparison: the same ViT (pre-norm blocks, packed qkv,
GELU, classifier on the CLS token), the same step (forward, cross-entropy, backward, AdamW) on
the same batch shape, timed on the CPU. Prints `images_per_s X` (median over --steps after one
warm-up step). Run by vit_bench when torch is importable; also by hand:

    python3 tools/bench_pytorch.py --hidden 64 --layers 4 --heads 4 --mlp 256 --batch-size 64
"""
import argparse
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c, heads, mlp, dropout, attn_dropout, gelu):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(c)
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)
        self.ln2 = nn.LayerNorm(c)
        self.fc1 = nn.Linear(c, mlp)
        self.fc2 = nn.Linear(mlp, c)
        self.drop = nn.Dropout(dropout)
        self.attn_drop = nn.Dropout(attn_dropout)
        self.gelu = gelu

    def forward(self, x):
        b, t, c = x.shape
        hd = c // self.heads
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        p = self.attn_drop(torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1))
        x = x + self.drop(self.proj((p @ v).transpose(1, 2).reshape(b, t, c)))
        h = F.gelu(self.fc1(self.ln2(x)), approximate=self.gelu)
        return x + self.drop(self.fc2(h))


class ViT(nn.Module):
    def __init__(self, a):
        super().__init__()
        n = (a.image_size // a.patch_size) ** 2
        self.patch = nn.Conv2d(3, a.hidden, a.patch_size, a.patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, a.hidden))
        self.pos = nn.Parameter(torch.randn(1, n + 1, a.hidden) * 0.02)
        self.drop = nn.Dropout(a.dropout)
        gelu = "tanh" if a.gelu == "tanh" else "none"
        self.blocks = nn.ModuleList(
            [Block(a.hidden, a.heads, a.mlp, a.dropout, a.attn_dropout, gelu) for _ in range(a.layers)])
        self.head = nn.Linear(a.hidden, a.classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        x = self.drop(x)
        for blk in self.blocks:
            x = blk(x)
        return self.head(x[:, 0])


def main():
    p = argparse.ArgumentParser()
    for name, default in [("image-size", 32), ("patch-size", 4), ("hidden", 64), ("layers", 4),
                          ("heads", 4), ("mlp", 256), ("classes", 10), ("batch-size", 64),
                          ("steps", 5)]:
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--attn-dropout", type=float, default=0.1)
    p.add_argument("--gelu", choices=["tanh", "erf"], default="tanh")
    a = p.parse_args()
    torch.manual_seed(0)
    model = ViT(a)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    images = torch.randint(0, 256, (a.batch_size, 3, a.image_size, a.image_size), dtype=torch.uint8)
    labels = torch.randint(0, a.classes, (a.batch_size,))
    times = []
    for step in range(a.steps + 1):
        t0 = time.perf_counter()
        x = (images.float() / 255 - 0.5) / 0.5  # the input scaling is part of vit.cu's step too
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        loss.item()
        if step > 0:
            times.append(time.perf_counter() - t0)
    print("images_per_s %.3f" % (a.batch_size / statistics.median(times)))


if __name__ == "__main__":
    main()
