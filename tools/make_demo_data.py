#!/usr/bin/env python3
"""A small synthetic dataset where the class is *somewhere* in the image, for demonstrating
vit_predict --attention (README, "Where the model looks"); standard library only:

    python3 tools/make_demo_data.py OUT_DIR [--train 5000] [--test 500] [--seed 1]

Each 32x32 image is grey noise with one 8x8 square of the class's colour (10 colours) at a random
place, and one 8x8 square of noise of another brightness as a distractor. Written in the CIFAR-10
binary format (data_batch_1..5.bin, test_batch.bin, batches.meta.txt), so `vit_train --data
OUT_DIR` reads it as it is; `--png N` also writes the first N test images as PNG files to look at.
Not CIFAR-10: a model that solves it has to find the square, which is what an attention map can
show.
"""
import argparse
import os
import random
import struct
import zlib

COLOURS = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40), (220, 40, 220),
           (40, 220, 220), (240, 240, 240), (20, 20, 20), (230, 130, 30), (120, 60, 180)]
NAMES = ["red", "green", "blue", "yellow", "magenta", "cyan", "white", "black", "orange", "purple"]


def image(rng, k):
    """(label, planar RGB bytes 3x32x32)."""
    px = [[[rng.randint(90, 170) for _ in range(32)] for _ in range(32)] for _ in range(3)]
    x0, y0 = rng.randint(0, 24), rng.randint(0, 24)
    while True:  # the distractor does not overlap the square
        x1, y1 = rng.randint(0, 24), rng.randint(0, 24)
        if abs(x1 - x0) >= 8 or abs(y1 - y0) >= 8:
            break
    shade = rng.choice([30, 230])
    for y in range(8):
        for x in range(8):
            for c in range(3):
                px[c][y0 + y][x0 + x] = max(0, min(255, COLOURS[k][c] + rng.randint(-20, 20)))
                px[c][y1 + y][x1 + x] = max(0, min(255, shade + rng.randint(-60, 60)))
    return bytes(v for c in px for row in c for v in row)


def write_png(path, planar):
    rows = []
    for y in range(32):
        rows.append(b"\x00" + bytes(planar[c * 1024 + y * 32 + x] for x in range(32) for c in range(3)))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 32, 8, 2, 0, 0, 0)) +
                chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--train", type=int, default=5000)
    p.add_argument("--test", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--png", type=int, default=0, help="also write the first N test images as OUT/test_K_NAME.png")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = random.Random(a.seed)

    def write(name, n):
        recs = []
        for _ in range(n):
            k = rng.randrange(10)
            recs.append((k, image(rng, k)))
        with open(os.path.join(a.out, name), "wb") as f:
            for k, img in recs:
                f.write(bytes([k]) + img)
        return recs

    per = a.train // 5
    for i in range(5):
        write("data_batch_%d.bin" % (i + 1), per if i < 4 else a.train - 4 * per)
    test = write("test_batch.bin", a.test)
    with open(os.path.join(a.out, "batches.meta.txt"), "w") as f:
        f.write("\n".join(NAMES) + "\n")
    for i, (k, img) in enumerate(test[:a.png]):
        write_png(os.path.join(a.out, "test_%d_%s.png" % (i, NAMES[k])), img)


if __name__ == "__main__":
    main()
