"""wave_images.py: distinct 64x64 RGB test images (colour waves) as PNGs, written with zlib alone, for the database tests.

Usage: wave_images.py DIR:PREFIX:FIRST:COUNT ...   writes DIR/PREFIX<i>.png for i in FIRST..FIRST+COUNT-1
(i as two digits); image i is the same picture in every run and every test.
"""
import math
import os
import struct
import sys
import zlib


def png(path, w, h, px):
    raw = b"".join(b"\0" + bytes(px[y * w * 3:(y + 1) * w * 3]) for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def image(i, path):
    fx, fy, ph = 0.05 + (i * 37 % 23) * 0.02, 0.04 + (i * 53 % 19) * 0.025, i * 0.7
    col = [(i * 71 % 255) / 255, (i * 113 % 255) / 255, (i * 29 % 255) / 255]
    px = []
    for y in range(64):
        for x in range(64):
            w = 0.5 + 0.5 * math.sin(fx * x * (1 + i % 3) + fy * y + ph)
            v = 0.5 + 0.5 * math.cos(fy * x - fx * y * (1 + i % 4) - ph)
            px += [int(255 * min(1, max(0, c * w + (1 - c) * v * (1 if k == i % 3 else 0.4)))) for k, c in enumerate(col)]
    png(path, 64, 64, px)


def main(specs):
    for spec in specs:
        folder, prefix, first, count = spec.split(":")
        os.makedirs(folder, exist_ok=True)
        for i in range(int(first), int(first) + int(count)):
            image(i, os.path.join(folder, f"{prefix}{i:02d}.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
