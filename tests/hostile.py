"""hostile.py: hostile and heavy clients of semipaintd for tests/it_hardening.sh (loopback only, bounded in count and time).

  png  IMG MASK W H [--checker N]   writes a smooth RGB PNG and a grey mask PNG (a centre box, or an
                                    N-pixel checkerboard) with the standard library and numpy
  slow --port P --slow N --slow-from ADDR --timeout-ms T --image IMG --mask MASK
        N connections announce a 1,000,000-byte body and send one byte a second; meanwhile ordinary
        requests from 127.0.0.1 must all be answered 200 within T, and every slow connection must
        end (408 or closed) within 2 T + 2 s
  keys --port P --keys N            posts {"k0":0,...,"kN-1":0}; prints "STATUS SECONDS"
  telea --port P --pid PID --count N --image IMG --mask MASK --bound-config SEMIPAINTD
        N concurrent method=telea requests; /healthz polled all along must answer within 0.5 s;
        each request must get an HTTP status (200, 413, 503 or 504); the daemon's peak RSS must
        stay inside the README's bound computed from its effective configuration
Exit status 0 when the checks hold; the last line printed is a summary.
"""
import http.client
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import numpy as np


def write_png(path, arr):
    h, w = arr.shape[:2]
    ch = 1 if arr.ndim == 2 else arr.shape[2]
    raw = np.zeros((h, 1 + w * ch), np.uint8)
    raw[:, 1:] = arr.reshape(h, w * ch)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)

    ct = {1: 0, 3: 2}[ch]
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ct, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b""))


def cmd_png(args):
    img, mask, w, h = args[0], args[1], int(args[2]), int(args[3])
    checker = int(args[5]) if len(args) > 5 and args[4] == "--checker" else 0
    y, x = np.mgrid[0:h, 0:w]
    im = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), ((x + y) // 4) & 255], -1).astype(np.uint8)
    write_png(img, im)
    if checker:
        m = (((x // checker) + (y // checker)) & 1) * 255
    else:
        m = ((abs(x - w // 2) < w // 6) & (abs(y - h // 2) < h // 6)) * 255
    write_png(mask, m.astype(np.uint8))
    return 0


def opts(args):
    o = {}
    for i in range(0, len(args), 2):
        o[args[i].lstrip("-").replace("-", "_")] = args[i + 1]
    return o


def multipart(fields):
    b = b"hostile-boundary-7f3a"
    body = b""
    for name, data, fname in fields:
        body += b"--" + b + b'\r\nContent-Disposition: form-data; name="' + name.encode() + b'"'
        if fname:
            body += b'; filename="' + fname.encode() + b'"\r\nContent-Type: image/png'
        body += b"\r\n\r\n" + data + b"\r\n"
    return body + b"--" + b + b"--\r\n", "multipart/form-data; boundary=" + b.decode()


def request(port, method, path, body=None, ctype=None, timeout=10):
    """(status, seconds) of one HTTP request to 127.0.0.1:port; status -1 for a transport error."""
    t0 = time.time()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request(method, path, body=body, headers={"Content-Type": ctype} if ctype else {})
        r = c.getresponse()
        r.read()
        c.close()
        return r.status, time.time() - t0
    except Exception:
        return -1, time.time() - t0


def post(port, body, ctype, timeout, path="/v1/inpaint"):
    return request(port, "POST", path, body, ctype, timeout)


def cmd_slow(args):
    o = opts(args)
    port, n, src, tmo = int(o["port"]), int(o["slow"]), o["slow_from"], int(o["timeout_ms"]) / 1e3
    body, ctype = multipart([("image", open(o["image"], "rb").read(), "i.png"),
                             ("mask", open(o["mask"], "rb").read(), "m.png")])
    head = (f"POST /v1/inpaint HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: 1000000\r\n\r\n").encode()
    socks, ended, t0 = {}, {}, time.time()
    refused = 0
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((src, 0))
        s.setblocking(True)
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(head + b"-")
            s.setblocking(False)
            socks[i] = s
        except OSError:
            refused += 1
            ended[i] = ("refused", time.time() - t0)
            s.close()
    normal = []
    stop = threading.Event()

    def normal_loop():
        while not stop.is_set():
            normal.append(post(port, body, ctype, tmo + 5))
            time.sleep(0.2)

    th = threading.Thread(target=normal_loop)
    th.start()
    limit = 2 * tmo + 2
    last_send = time.time()
    while socks and time.time() - t0 < limit + 3:
        r, _, _ = select.select(list(socks.values()), [], [], 0.2)
        for s in r:
            i = next(k for k, v in socks.items() if v is s)
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            what = "408" if data.startswith(b"HTTP/1.1 408") else ("closed" if not data else data[9:12].decode())
            ended[i] = (what, time.time() - t0)
            s.close()
            del socks[i]
        if time.time() - last_send >= 1.0:
            last_send = time.time()
            for i, s in list(socks.items()):
                try:
                    s.send(b"-")
                except OSError:
                    ended[i] = ("closed", time.time() - t0)
                    s.close()
                    del socks[i]
    stop.set()
    th.join()
    for s in socks.values():
        s.close()
    kinds = {}
    for what, _ in ended.values():
        kinds[what] = kinds.get(what, 0) + 1
    worst_end = max((t for _, t in ended.values()), default=0.0)
    ok200 = sum(1 for st, _ in normal if st == 200)
    worst_normal = max((t for _, t in normal), default=0.0)
    good = (len(normal) >= 3 and ok200 == len(normal) and worst_normal < tmo and not socks
            and set(kinds) <= {"408", "closed", "refused"} and worst_end <= limit)
    print(f"normal requests: {ok200}/{len(normal)} answered 200, slowest {worst_normal:.2f} s (deadline {tmo:.1f} s)")
    print(f"slow uploads: {n} opened, ended {kinds}, still open {len(socks)}, last ended at {worst_end:.1f} s "
          f"(limit {limit:.1f} s)")
    print(f"{ok200}/{len(normal)} normal 200s (slowest {worst_normal:.2f} s); slow ones {kinds} by {worst_end:.1f} s")
    return 0 if good else 1


def cmd_keys(args):
    o = opts(args)
    n = int(o["keys"])
    body = ("{" + ",".join(f'"k{i}":0' for i in range(n)) + "}").encode()
    st, sec = post(int(o["port"]), body, "application/json", 60)
    print(f"{st} {sec:.3f}s for {len(body)} bytes")
    return 0


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def effective_config(semipaintd):
    out = subprocess.run([semipaintd, "-c", "config/semipaintd.yaml", "--print-config"], capture_output=True,
                         text=True, check=True).stdout
    cfg, sec = {}, ""
    for line in out.splitlines():
        if not line.startswith(" ") and line.endswith(":"):
            sec = line[:-1]
        elif ":" in line and line.startswith("  "):
            k, v = line.strip().split(":", 1)
            cfg[f"{sec}.{k}"] = v.split("#")[0].strip().strip('"')
    return cfg


def size_of(v):
    mult = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for suf, m in mult.items():
        if v.endswith(suf):
            return int(v[:-len(suf)]) * m
    return int(v)


def cmd_telea(args):
    o = opts(args)
    port, pid, n = int(o["port"]), int(o["pid"]), int(o["count"])
    c = effective_config(o["bound_config"])
    base = rss_kib(pid, "VmRSS") * 1024
    # the README's bound (section "Memory"), above the resident memory once ready
    bound = (base + 2 * size_of(c["server.max_buffered_bytes"]) + 24 * size_of(c["server.max_pixels_in_flight"])
             + 45 * int(c["inpaint.telea_threads"]) * size_of(c["server.max_image_pixels"])
             + 64 * 1024 * int(c["server.max_connections"]))
    body, ctype = multipart([("image", open(o["image"], "rb").read(), "big.png"),
                             ("mask", open(o["mask"], "rb").read(), "mask.png"), ("method", b"telea", None)])
    tmo = int(c["server.request_timeout_ms"]) / 1e3
    res = [None] * n
    stop = threading.Event()
    health = []

    def one(i):
        res[i] = post(port, body, ctype, tmo + 30)

    def poll():
        while not stop.is_set():
            health.append(get_health(port))
            time.sleep(0.1)

    ths = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    hp = threading.Thread(target=poll)
    hp.start()
    t0 = time.time()
    for t in ths:
        t.start()
    for t in ths:
        t.join(tmo + 60)
    stop.set()
    hp.join()
    peak = rss_kib(pid, "VmHWM") * 1024
    statuses = [r[0] if r else None for r in res]
    worst_health = max((t for _, t in health), default=0.0)
    bad_health = sum(1 for st, _ in health if st != 200)
    good = (all(s in (200, 413, 503, 504) for s in statuses) and worst_health < 0.5 and bad_health == 0
            and peak <= bound)
    print(f"statuses {statuses} in {time.time() - t0:.1f} s; /healthz {len(health)} polls, slowest "
          f"{worst_health * 1e3:.0f} ms, {bad_health} not 200; peak RSS {peak / 2**20:.0f} MiB, bound "
          f"{bound / 2**20:.0f} MiB (ready: {base / 2**20:.0f} MiB)")
    return 0 if good else 1


def get_health(port):
    return request(port, "GET", "/healthz", timeout=5)


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    cmd, args = sys.argv[1], sys.argv[2:]
    return {"png": cmd_png, "slow": cmd_slow, "keys": cmd_keys, "telea": cmd_telea}[cmd](args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
