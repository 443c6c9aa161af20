#!/usr/bin/env python3
"""Write a torchvision VisionTransformer to safetensors for vit.cu.

The file keeps torchvision's own key layout (class_token, conv_proj.*, encoder.layers.
encoder_layer_{i}.*, heads.head.*) so it is also loadable back into PyTorch, and records the
architecture in the safetensors __metadata__ (heads, ln_eps, gelu, mean/std, image_size,
patch_size, hidden, layers, mlp, classes, and the class names when the weights have them), so
vit_train --init / vit_predict --weights need no flags for it.

  # ImageNet weights (downloads through torchvision into its cache):
  python3 tools/export_torchvision.py --model vit_b_16 --weights IMAGENET1K_V1 -o vit_b_16.safetensors
  # A state dict you trained yourself (architecture given by flags):
  python3 tools/export_torchvision.py --state-dict my_vit.pth --image-size 32 --patch-size 4 \
      --layers 6 --heads 4 --hidden 256 --mlp 512 --classes 10 -o my_vit.safetensors
  # A small random model, no download (what tools/make_fixtures.py uses):
  python3 tools/export_torchvision.py --random --image-size 32 --patch-size 8 --layers 2 \
      --heads 2 --hidden 32 --mlp 64 --classes 10 -o tiny_tv.safetensors

Needs torch and torchvision (Debian: apt install python3-torchvision; pip: pip install torch
torchvision). The safetensors pip package is not needed: the format is written by hand.
"""
import argparse
import json
import os
import struct
import sys

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _dtype_name(t):
    import torch
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8"}
    if t.dtype not in names:
        raise ValueError("unsupported dtype %s" % t.dtype)
    return names[t.dtype]


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, torch.Tensor) in file order (or a dict). Little-endian raw data,
    header padded with spaces to 8 bytes, written to a temporary file and renamed."""
    import torch
    items = list(tensors.items()) if isinstance(tensors, dict) else list(tensors)
    header, blobs, offset = {}, [], 0
    for name, t in items:
        t = t.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: take the raw 16-bit words
            raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
        else:
            raw = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _dtype_name(t), "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def architecture(model, mean=IMAGENET_MEAN, std=IMAGENET_STD, class_names=None):
    """vit.cu's config keys (common/config.h config_to_metadata) for a VisionTransformer."""
    import torch.nn as nn
    if getattr(model, "representation_size", None) is not None:
        raise SystemExit("error: representation_size (heads.pre_logits) is not supported by vit.cu")
    if not isinstance(model.conv_proj, nn.Conv2d):
        raise SystemExit("error: conv-stem VisionTransformers are not supported by vit.cu")
    layer0 = model.encoder.layers[0]
    gelu = [m for m in layer0.mlp.modules() if isinstance(m, nn.GELU)]
    if not gelu:
        raise SystemExit("error: the MLP has no nn.GELU: not a standard VisionTransformer")
    md = {
        "format": "torchvision",
        "image_size": model.image_size,
        "patch_size": model.patch_size,
        "channels": 3,
        "classes": model.heads.head.out_features,
        "hidden": model.hidden_dim,
        "layers": len(model.encoder.layers),
        "heads": layer0.self_attention.num_heads,
        "mlp": model.mlp_dim,
        "gelu": "tanh" if gelu[0].approximate == "tanh" else "erf",
        "ln_eps": "%.9g" % model.encoder.ln.eps,
        "final_ln": "true",
        "qkv_bias": "true" if layer0.self_attention.in_proj_bias is not None else "false",
        "dropout": "%.9g" % model.dropout,
        "attn_dropout": "%.9g" % model.attention_dropout,
        "mean": ",".join("%.9g" % v for v in mean),
        "std": ",".join("%.9g" % v for v in std),
    }
    if class_names:
        md["class_names"] = json.dumps(list(class_names))
    return md


def export(model, path, mean=IMAGENET_MEAN, std=IMAGENET_STD, class_names=None, extra=None):
    """Writes model.state_dict() as F32 safetensors in torchvision's layout."""
    import torch
    md = architecture(model, mean, std, class_names)
    md.update(extra or {})
    sd = model.state_dict()
    write_safetensors(path, [(k, v.to(torch.float32)) for k, v in sd.items()], md)
    return md


def build_model(a):
    from torchvision.models.vision_transformer import VisionTransformer
    for k in ("image_size", "patch_size", "layers", "heads", "hidden", "mlp"):
        if getattr(a, k) is None:
            raise SystemExit("error: --%s is needed to build the model" % k.replace("_", "-"))
    return VisionTransformer(image_size=a.image_size, patch_size=a.patch_size, num_layers=a.layers,
                             num_heads=a.heads, hidden_dim=a.hidden, mlp_dim=a.mlp,
                             num_classes=a.classes, dropout=a.dropout,
                             attention_dropout=a.attn_dropout)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="torchvision weights enum name, e.g. IMAGENET1K_V1 "
                     "(with --model; downloaded by torchvision)")
    src.add_argument("--state-dict", help="a .pth file holding a VisionTransformer state_dict "
                     "(or the whole module); architecture from the flags below")
    src.add_argument("--random", action="store_true", help="a randomly initialised model")
    p.add_argument("--model", default="vit_b_16",
                   help="torchvision builder for --weights: vit_b_16 (default), vit_b_32, vit_l_16, ...")
    p.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    p.add_argument("--image-size", type=int)
    p.add_argument("--patch-size", type=int)
    p.add_argument("--layers", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--hidden", type=int)
    p.add_argument("--mlp", type=int)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--attn-dropout", type=float, default=0.0)
    p.add_argument("--mean", default=",".join(map(str, IMAGENET_MEAN)), help="r,g,b input mean")
    p.add_argument("--std", default=",".join(map(str, IMAGENET_STD)), help="r,g,b input std")
    p.add_argument("--seed", type=int, default=0, help="torch seed of --random")
    p.add_argument("--noise", type=float, default=0.0,
                   help="--random: add N(0, NOISE) to every parameter (torchvision initialises "
                        "the head to zero, which makes a useless test model)")
    a = p.parse_args(argv)
    try:
        import torch
        import torchvision
    except ImportError:
        raise SystemExit("error: needs torch and torchvision: apt install python3-torchvision "
                         "(Debian/Ubuntu) or pip install torch torchvision")
    mean = tuple(float(x) for x in a.mean.split(","))
    std = tuple(float(x) for x in a.std.split(","))
    names = None
    if a.weights:
        try:
            weights = torchvision.models.get_model_weights(a.model)[a.weights]
        except AttributeError:  # torchvision < 0.14
            from torchvision.models import vision_transformer as vt
            enum = getattr(vt, "ViT_%s_Weights" % a.model[4:].upper())
            weights = enum[a.weights]
        try:
            model = getattr(torchvision.models, a.model)(weights=weights)
        except OSError as e:  # urllib's URLError included: no network, proxy, disk full
            raise SystemExit("error: could not download %s %s through torchvision: %s"
                             % (a.model, a.weights, e))
        tr = weights.transforms()
        mean, std = tuple(tr.mean), tuple(tr.std)
        names = weights.meta.get("categories")
        extra = {"source": "torchvision %s %s" % (a.model, a.weights)}
    else:
        torch.manual_seed(a.seed)
        model = build_model(a)
        if a.state_dict:
            sd = torch.load(a.state_dict, map_location="cpu")
            if isinstance(sd, torch.nn.Module):
                sd = sd.state_dict()
            model.load_state_dict(sd)
            extra = {"source": os.path.basename(a.state_dict)}
        else:
            if a.noise > 0:
                with torch.no_grad():
                    for t in model.parameters():
                        t.add_(torch.randn_like(t) * a.noise)
            extra = {"source": "random seed %d noise %g" % (a.seed, a.noise)}
    model.eval()
    md = export(model, a.output, mean, std, names, extra)
    n = sum(t.numel() for t in model.parameters())
    print("wrote %s: %s layout, image %s, patch %s, hidden %s, %s layers, %s heads, MLP %s, "
          "%s classes, %d parameters" % (a.output, md["format"], md["image_size"], md["patch_size"],
                                         md["hidden"], md["layers"], md["heads"], md["mlp"],
                                         md["classes"], n))


if __name__ == "__main__":
    sys.exit(main())
