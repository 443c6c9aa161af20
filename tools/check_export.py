#!/usr/bin/env python3
"""Check vit_export against PyTorch itself (run by hand; CI does not need torch):

    python3 tools/check_export.py --weights runs/X/best.safetensors [--format torchvision|tintn]
                                  [--heads N] [--bin .] [--tol 1e-4] [IMAGE ...]

1. ./vit_export writes the weights in the PyTorch layout (default: torchvision when the model
   has a final LayerNorm, else tintn);
2. the export is loaded with load_state_dict(strict=True) into torchvision's VisionTransformer
   or into tintn's ViTForClassfication (re-implemented in tools/make_fixtures.py), built from
   the sizes in the file's __metadata__;
3. ./vit_predict --json --device cpu classifies the same images with the original checkpoint;
4. PyTorch's logits, computed from the same pixels with the same preprocessing (/255, bilinear
   resize align_corners=False without antialiasing, the file's mean/std), must equal
   vit_predict's: |a - b| <= tol * (1 + |b|) for every logit, and the same top-1 class.

Without IMAGE arguments it writes its own test images (random pixels; one at the model's size,
two at other sizes so the resize is checked too). IMAGE files need Pillow to be read here.
Needs torch (+ torchvision for that layout): Debian python3-torchvision. Exit status 0 when
every image agrees, 1 otherwise.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def write_png(path, w, h, rgb):
    """RGB bytes (h, w, 3) as an 8-bit PNG, standard library only."""
    raw = b"".join(b"\x00" + bytes(rgb[y * w * 3:(y + 1) * w * 3]) for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
                chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def read_safetensors(path):
    """(tensors by name as float32 torch tensors, __metadata__)."""
    import torch
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    md = header.pop("__metadata__", {})
    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
    out = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        x = torch.frombuffer(bytearray(data[b:e]), dtype=dtypes[t["dtype"]]) if e > b else torch.zeros(0)
        out[name] = x.reshape(t["shape"]).to(torch.float32)
    return out, md


def build(fmt, md):
    i = lambda k: int(md[k])
    if fmt == "torchvision":
        from torchvision.models.vision_transformer import VisionTransformer
        return VisionTransformer(image_size=i("image_size"), patch_size=i("patch_size"),
                                 num_layers=i("layers"), num_heads=i("heads"), hidden_dim=i("hidden"),
                                 mlp_dim=i("mlp"), num_classes=i("classes"))
    sys.path.insert(0, HERE)
    from make_fixtures import ViTForClassfication
    return ViTForClassfication(dict(
        image_size=i("image_size"), patch_size=i("patch_size"), hidden_size=i("hidden"),
        num_attention_heads=i("heads"), intermediate_size=i("mlp"), num_hidden_layers=i("layers"),
        num_classes=i("classes"), qkv_bias=md.get("qkv_bias", "true") == "true",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def pixels_of(path):
    """(h, w, 3) uint8 torch tensor of an image file."""
    import torch
    from PIL import Image  # only for images given on the command line
    im = Image.open(path).convert("RGB")
    return torch.tensor(list(im.getdata()), dtype=torch.uint8).reshape(im.height, im.width, 3)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="checkpoint to export (vit.cu, tintn or torchvision layout)")
    p.add_argument("--format", choices=["torchvision", "tintn"], help="default: from the model's final LayerNorm")
    p.add_argument("--bin", default=os.path.join(HERE, ".."), help="directory of vit_export and vit_predict")
    p.add_argument("--tol", type=float, default=1e-4, help="|a - b| <= tol * (1 + |b|) per logit")
    p.add_argument("--heads", type=int, help="number of heads of a PyTorch file that does not record it")
    p.add_argument("images", nargs="*")
    a = p.parse_args()

    import torch
    import torch.nn.functional as F
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        if a.format is None:
            _, md0 = read_safetensors(a.weights)
            a.format = "torchvision" if md0.get("final_ln", "false") == "true" else "tintn"
        export = os.path.join(tmp, "export.safetensors")
        heads = ["--heads", str(a.heads)] if a.heads else []
        r = subprocess.run([os.path.join(a.bin, "vit_export"), "--weights", a.weights, "--format", a.format,
                            "-o", export] + heads, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit("vit_export failed: " + r.stderr.strip())
        tensors, md = read_safetensors(export)
        model = build(a.format, md)
        model.load_state_dict(tensors, strict=True)
        model.eval()
        S = int(md["image_size"])
        mean = torch.tensor([float(v) for v in md["mean"].split(",")]).view(1, 3, 1, 1)
        std = torch.tensor([float(v) for v in md["std"].split(",")]).view(1, 3, 1, 1)

        images, pix = list(a.images), []
        if images:
            pix = [pixels_of(f) for f in images]
        else:
            g = torch.Generator().manual_seed(0)
            for k, (w, h) in enumerate([(S, S), (S + 9, S + 3), (2 * S, S)]):
                px = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8)
                images.append(os.path.join(tmp, "img%d.png" % k))
                write_png(images[-1], w, h, px.flatten().tolist())
                pix.append(px)

        r = subprocess.run([os.path.join(a.bin, "vit_predict"), "--weights", a.weights, "--json",
                            "--device", "cpu", "--top-k", "1"] + heads + images, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit("vit_predict failed: " + r.stderr.strip())
        ours = [json.loads(line) for line in r.stdout.splitlines()]

        ok = True
        print("%s layout, torch %s: %s" % (a.format, torch.__version__, os.path.basename(a.weights)))
        for path, px, o in zip(images, pix, ours):
            x = px.permute(2, 0, 1).unsqueeze(0).to(torch.float32) / 255.0
            if x.shape[-2:] != (S, S):
                x = F.interpolate(x, size=(S, S), mode="bilinear", align_corners=False, antialias=False)
            with torch.no_grad():
                t = model((x - mean) / std)
            t = (t[0] if isinstance(t, tuple) else t)[0].to(torch.float64)
            b = torch.tensor(o["logits"], dtype=torch.float64)
            err = (t - b).abs()
            bad = bool((err > a.tol * (1 + b.abs())).any())
            same_top = int(t.argmax()) == o["top"][0]["class"]
            ok = ok and not bad and same_top
            print("  %-12s %dx%d  max |logit difference| %.3g  top-1 %s  %s" % (
                os.path.basename(path), px.shape[1], px.shape[0], float(err.max()),
                "same" if same_top else "DIFFERENT", "ok" if not bad and same_top else "MISMATCH"))
        print("export agrees with vit_predict" if ok else "export does NOT agree with vit_predict")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
