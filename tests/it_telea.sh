#!/usr/bin/env bash
# it_telea.sh: compares telea_inpaint with OpenCV's cv2.inpaint(INPAINT_TELEA) on validation faces and irregular masks.
# Prints the mean absolute difference inside the holes (0-255), the error of each against the original
# image, and the speed ratio (our time / cv2's, best of 3 each, on the same inputs and machine).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
# 24 pairs (12 under the sanitizers, which make each run about 3x slower).
N=${TELEA_PAIRS:-$([ -n "${SP_SANITIZED:-}" ] && echo 12 || echo 24)}
if ! "$PY" -c 'import cv2' 2>/dev/null; then
  echo "it_telea: SKIP ($PY has no cv2; apt-get install python3-opencv)"
  exit 0
fi
out="$BUILD/tests/telea"
rm -rf "$out"
mkdir -p "$out"
set +e
"$BUILD/tests/test_telea" --compare "$out" "$N" > "$out/c.txt"
rc=$?
set -e
if [ "$rc" -eq 3 ]; then
  cat "$out/c.txt"
  echo "it_telea: SKIP (no data)"
  exit 0
fi
[ "$rc" -eq 0 ] || { cat "$out/c.txt"; echo "it_telea: FAIL (test_telea --compare exited $rc)"; exit 1; }
"$PY" - "$out" <<'PYEOF'
import sys, time
import cv2
import numpy as np

out = sys.argv[1]
cv2.setNumThreads(1)
# Bounds, in grey levels, on the mean |difference| to cv2 inside the holes. Measured on 24 pairs
# (CelebA-HQ val 12001-12024 with NVIDIA irregular masks spread over 4%-60% holes): 2.5 without
# the gradient term and 12.5 with it. Without it the method is OpenCV's up to OpenCV's bounded
# (+-1.4 level) gradient nudge, so 4 leaves room for rounding yet catches any change to T, the
# band order or the weights. With it, the fill differs from cv2 by design; 16 catches a broken
# gradient term (the literal, unlimited scheme of the paper diverges: 36.9 levels, error 38 vs
# 25 for cv2). The default must also be no worse than cv2 against the original image (+2%).
BOUND_PLAIN, BOUND_GRAD, QUALITY_SLACK = 4.0, 16.0, 1.02
pairs = []
for line in open(f"{out}/c.txt"):
    f = line.split()
    if f and f[0] == "pair":
        pairs.append((f[1], float(f[f.index("hole") + 1]), float(f[f.index("c_ms") + 1]), float(f[f.index("a_ms") + 1])))
if not pairs:
    print("it_telea: FAIL (no pairs)")
    sys.exit(1)
S = dict(px=0, d_grad=0, d_plain=0, e_grad=0, e_plain=0, e_cv=0, t_grad=0, t_plain=0, t_cv=0)
print(f"{'pair':>4} {'hole':>6} {'|c-cv2|':>8} {'|a-cv2|':>8} {'|c-gt|':>7} {'|a-gt|':>7} {'|cv2-gt|':>8} "
      f"{'c ms':>7} {'a ms':>7} {'cv2 ms':>7}")
bad = False
for i, hole_ratio, c_ms, a_ms in pairs:
    img = cv2.imread(f"{out}/in_{i}.png", cv2.IMREAD_COLOR).astype(np.int32)
    mask = cv2.imread(f"{out}/mask_{i}.png", cv2.IMREAD_GRAYSCALE)
    grad = cv2.imread(f"{out}/c_{i}.png", cv2.IMREAD_COLOR).astype(np.int32)
    plain = cv2.imread(f"{out}/a_{i}.png", cv2.IMREAD_COLOR).astype(np.int32)
    best = 1e9
    for _ in range(3):
        t0 = time.perf_counter()
        ref = cv2.inpaint(img.astype(np.uint8), mask, 5, cv2.INPAINT_TELEA)
        best = min(best, time.perf_counter() - t0)
    ref = ref.astype(np.int32)
    h = mask > 127
    for name, res in (("c", grad), ("a", plain)):
        if (res[~h] != img[~h]).any():
            print(f"pair {i}: {name}: known pixels changed")
            bad = True
    row = [np.abs(grad - ref)[h].mean(), np.abs(plain - ref)[h].mean(), np.abs(grad - img)[h].mean(),
           np.abs(plain - img)[h].mean(), np.abs(ref - img)[h].mean()]
    n = h.sum() * 3
    S["px"] += n
    for k, v in zip(("d_grad", "d_plain", "e_grad", "e_plain", "e_cv"), row):
        S[k] += v * n
    S["t_grad"] += c_ms; S["t_plain"] += a_ms; S["t_cv"] += best * 1e3
    print(f"{i:>4} {hole_ratio:6.3f} " + " ".join(f"{v:{w}.2f}" for v, w in zip(row, (8, 8, 7, 7, 8)))
          + f" {c_ms:7.2f} {a_ms:7.2f} {best * 1e3:7.2f}")
m = {k: S[k] / S["px"] for k in ("d_grad", "d_plain", "e_grad", "e_plain", "e_cv")}
print(f"telea vs cv2.inpaint(INPAINT_TELEA, radius 5) on {len(pairs)} pairs, mean |diff| inside holes: "
      f"default {m['d_grad']:.2f}, TELEA_NO_GRADIENT {m['d_plain']:.2f} grey levels")
print(f"mean |error| against the original image inside holes: default {m['e_grad']:.2f}, "
      f"TELEA_NO_GRADIENT {m['e_plain']:.2f}, cv2 {m['e_cv']:.2f}")
print(f"time (best of 3, summed): default {S['t_grad']:.1f} ms, TELEA_NO_GRADIENT {S['t_plain']:.1f} ms, "
      f"cv2 {S['t_cv']:.1f} ms; ratio ours/cv2 {S['t_grad'] / S['t_cv']:.2f} (default), "
      f"{S['t_plain'] / S['t_cv']:.2f} (no gradient)")
if m["d_plain"] > BOUND_PLAIN:
    print(f"it_telea: FAIL (TELEA_NO_GRADIENT differs from cv2 by {m['d_plain']:.2f} > {BOUND_PLAIN})"); bad = True
if m["d_grad"] > BOUND_GRAD:
    print(f"it_telea: FAIL (default differs from cv2 by {m['d_grad']:.2f} > {BOUND_GRAD})"); bad = True
if m["e_grad"] > QUALITY_SLACK * m["e_cv"]:
    print(f"it_telea: FAIL (default error {m['e_grad']:.2f} > {QUALITY_SLACK} x cv2's {m['e_cv']:.2f})"); bad = True
print("it_telea:", "FAIL" if bad else "PASS")
sys.exit(1 if bad else 0)
PYEOF
