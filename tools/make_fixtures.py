#!/usr/bin/env python3
"""Regenerate the PyTorch parity fixtures in tests/fixtures/ (run by hand, not in CI):

    /usr/bin/python3 tools/make_fixtures.py [--out tests/fixtures]

Needs torch and torchvision (Debian: python3-torchvision), no network. Everything is seeded, so
a rerun with the same torch reproduces the files up to float rounding of that torch build.

For each of the two PyTorch originals of the reference, at a small config:
  tintn        our own re-implementation of tintn/vision-transformer-from-scratch's
               ViTForClassfication (the "faster attention" variant: one qkv_projection), written
               from its description: conv patch embedding, CLS token, learned positions, dropout;
               pre-norm blocks x += attn(ln1(x)); x += mlp(ln2(x)); tanh-approximated GELU;
               LayerNorm eps 1e-5; classifier on the CLS token; no final LayerNorm.
  torchvision  torchvision.models.VisionTransformer itself (erf GELU, eps 1e-6, final LN),
               written by tools/export_torchvision.py's exporter (so the fixture is what the tool
               produces, __metadata__ included).
the files are
  <name>_weights.safetensors  random weights in that model's own key layout (scaled so that
                              activations and gradients are O(1), not the near-zero init)
  <name>_io.safetensors       images (B,3,32,32) uint8 values stored as F32, labels (B,), the
                              normalised input x, logits (B,K), loss () = mean cross-entropy
  <name>_grads.safetensors    d loss / d param for every parameter, keyed like the weights
  <name>_adam.safetensors     the parameters after one torch.optim.Adam step (lr 1e-3)
Dropout is 0 everywhere, so everything is deterministic.

And the resampling fixtures of issue 6:
  resize_bilinear.safetensors  input (1,3,8,8) F32, output_f32 (1,3,56,56) = F.interpolate(
                               bilinear, align_corners=False), output_f16 = output_f32 cast to F16
  pos_bicubic.safetensors      pos (1,17,8): a CLS row + 4x4 grid; to6 / to7 / to3: CLS row kept,
                               the grid resized with F.interpolate(bicubic, align_corners=False)
"""
import argparse
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_torchvision import export, write_safetensors  # noqa: E402

B = 3


# ---- tintn's ViTForClassfication, re-implemented ------------------------------------------------

class TanhGELU(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class PatchEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        p = cfg["patch_size"]
        self.projection = nn.Conv2d(3, cfg["hidden_size"], kernel_size=p, stride=p)

    def forward(self, x):  # (B,3,S,S) -> (B, N, H), patches row-major
        return self.projection(x).flatten(2).transpose(1, 2)


class Embeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        n = (cfg["image_size"] // cfg["patch_size"]) ** 2
        self.patch_embeddings = PatchEmbeddings(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg["hidden_size"]))
        self.position_embeddings = nn.Parameter(torch.zeros(1, n + 1, cfg["hidden_size"]))
        self.dropout = nn.Dropout(cfg["hidden_dropout_prob"])

    def forward(self, x):
        x = self.patch_embeddings(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return self.dropout(x + self.position_embeddings)


class FasterMultiHeadAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.heads = cfg["num_attention_heads"]
        h = cfg["hidden_size"]
        self.qkv_projection = nn.Linear(h, 3 * h, bias=cfg["qkv_bias"])
        self.attn_dropout = nn.Dropout(cfg["attention_probs_dropout_prob"])
        self.output_projection = nn.Linear(h, h)
        self.output_dropout = nn.Dropout(cfg["hidden_dropout_prob"])

    def forward(self, x):
        b, t, h = x.shape
        hd = h // self.heads
        q, k, v = self.qkv_projection(x).chunk(3, dim=-1)  # rows of the weight: q | k | v
        q, k, v = (z.view(b, t, self.heads, hd).transpose(1, 2) for z in (q, k, v))
        probs = F.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        out = self.attn_dropout(probs) @ v  # (b, heads, t, hd)
        out = out.transpose(1, 2).reshape(b, t, h)  # head i -> features i*hd .. (i+1)*hd
        return self.output_dropout(self.output_projection(out))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense_1 = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"])
        self.activation = TanhGELU()
        self.dense_2 = nn.Linear(cfg["intermediate_size"], cfg["hidden_size"])
        self.dropout = nn.Dropout(cfg["hidden_dropout_prob"])

    def forward(self, x):
        return self.dropout(self.dense_2(self.activation(self.dense_1(x))))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention = FasterMultiHeadAttention(cfg)
        self.layernorm_1 = nn.LayerNorm(cfg["hidden_size"])  # eps 1e-5, PyTorch's default
        self.mlp = MLP(cfg)
        self.layernorm_2 = nn.LayerNorm(cfg["hidden_size"])

    def forward(self, x):
        x = x + self.attention(self.layernorm_1(x))
        return x + self.mlp(self.layernorm_2(x))


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg["num_hidden_layers"])])

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return x


class ViTForClassfication(nn.Module):  # sic: the original's spelling
    def __init__(self, cfg):
        super().__init__()
        self.embedding = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.classifier = nn.Linear(cfg["hidden_size"], cfg["num_classes"])

    def forward(self, x):
        return self.classifier(self.encoder(self.embedding(x))[:, 0])


# ---- fixtures --------------------------------------------------------------------------------------

def randomize(model, gen):
    """Weights with O(1) activations and gradients: matrices N(0, 1/sqrt(fan_in)), biases and
    embeddings N(0, 0.2) / N(0, 0.5), LayerNorm weights 1 + N(0, 0.2)."""
    with torch.no_grad():
        for name, t in model.named_parameters():
            z = torch.randn(t.shape, generator=gen)
            if t.dim() >= 2 and "token" not in name and "pos" not in name and "position" not in name:
                fan_in = t[0].numel()
                t.copy_(z / math.sqrt(fan_in))
            elif "ln" in name or "layernorm" in name or name.startswith("encoder.ln"):
                t.copy_(1.0 + 0.2 * z if name.endswith("weight") else 0.2 * z)
            elif t.dim() >= 2:  # cls / position embeddings
                t.copy_(0.5 * z)
            else:
                t.copy_(0.2 * z)


def run_case(name, model, mean, std, classes, out_dir, gen, write_weights):
    model.train()  # dropout is 0: train mode only matters for being the training path
    images = torch.randint(0, 256, (B, 3, 32, 32), generator=gen, dtype=torch.int64).to(torch.uint8)
    labels = torch.randint(0, classes, (B,), generator=gen)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    x = (images.to(torch.float32) / 255.0 - m) / s

    write_weights(os.path.join(out_dir, name + "_weights.safetensors"))
    logits = model(x)
    loss = F.cross_entropy(logits, labels)
    model.zero_grad()
    loss.backward()
    grads = [(k, p.grad.detach().clone()) for k, p in model.named_parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt.step()
    after = [(k, p.detach().clone()) for k, p in model.named_parameters()]

    write_safetensors(os.path.join(out_dir, name + "_io.safetensors"), [
        ("images", images.to(torch.float32)), ("labels", labels.to(torch.float32)), ("x", x),
        ("logits", logits.detach()), ("loss", loss.detach().reshape(()))],
        {"batch": str(B), "mean": ",".join("%.9g" % v for v in mean),
         "std": ",".join("%.9g" % v for v in std)})
    write_safetensors(os.path.join(out_dir, name + "_grads.safetensors"), grads)
    write_safetensors(os.path.join(out_dir, name + "_adam.safetensors"), after,
                      {"optimizer": "torch.optim.Adam", "lr": "0.001", "betas": "0.9,0.999",
                       "eps": "1e-08", "step": "1"})
    print("%s: loss %.6f, logits[0] %s" % (name, loss.item(), logits[0, :4].tolist()))


def main():
    p = argparse.ArgumentParser(description="regenerate tests/fixtures/")
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(1)

    # tintn: image 32, patch 4 (T = 65), hidden 48, 3 heads (head dim 16), MLP 64, 2 layers.
    # No __metadata__: like a state dict converted from the original, so the test must supply
    # --heads 3 (the basic preset's 4 would give different numbers).
    gen = torch.Generator().manual_seed(1234)
    cfg = dict(image_size=32, patch_size=4, hidden_size=48, num_attention_heads=3,
               intermediate_size=64, num_hidden_layers=2, num_classes=10, qkv_bias=True,
               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    tintn = ViTForClassfication(cfg)
    randomize(tintn, gen)
    run_case("tintn", tintn, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 10, a.out, gen,
             lambda path: write_safetensors(path, list(tintn.state_dict().items())))

    # torchvision: image 32, patch 8 (T = 17), hidden 32, 2 heads, MLP 64, 2 layers, 10 classes.
    from torchvision.models.vision_transformer import VisionTransformer
    gen = torch.Generator().manual_seed(5678)
    tv = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                           mlp_dim=64, num_classes=10)
    randomize(tv, gen)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    run_case("torchvision", tv, mean, std, 10, a.out, gen,
             lambda path: export(tv, path, mean, std, extra={"source": "tools/make_fixtures.py"}))

    # Bilinear resize 8 -> 56 (the 32 -> 224 ratio of the vit-b16 input path).
    gen = torch.Generator().manual_seed(42)
    img = torch.rand((1, 3, 8, 8), generator=gen) * 4.0 - 2.0  # normalised-pixel range
    out = F.interpolate(img, size=(56, 56), mode="bilinear", align_corners=False)
    write_safetensors(os.path.join(a.out, "resize_bilinear.safetensors"), [
        ("input", img), ("output_f32", out), ("output_f16", out.to(torch.float16))])

    # Bicubic position-embedding resampling: CLS + 4x4 grid of 8 features -> 6x6, 7x7, 3x3.
    pos = torch.randn((1, 17, 8), generator=gen)

    def resample(g):
        grid = pos[:, 1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)  # (1, C, 4, 4)
        r = F.interpolate(grid, size=(g, g), mode="bicubic", align_corners=False)
        return torch.cat([pos[:, :1], r.permute(0, 2, 3, 1).reshape(1, g * g, 8)], dim=1)

    write_safetensors(os.path.join(a.out, "pos_bicubic.safetensors"), [
        ("pos", pos), ("to6", resample(6)), ("to7", resample(7)), ("to3", resample(3))])
    for f in sorted(os.listdir(a.out)):
        print("%8d  %s" % (os.path.getsize(os.path.join(a.out, f)), f))


if __name__ == "__main__":
    main()
