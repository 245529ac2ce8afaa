#!/usr/bin/env bash
# it_openai.sh: POST /v1/images/edits through the official `openai` npm SDK (client.images.edit) against the real daemon on loopback: the inpainted PNG's size and bit-exact kept pixels, OpenAI-shaped errors, and the route's added server time against /v1/inpaint.
# Skips with a message where node or the pinned SDK (tests/npm, installed by scripts/npm_deps.sh) is
# absent. TIMING_N (default 30) requests per route for the Server-Timing comparison; 0 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
D="$BUILD/semipaintd"
FIX=tests/fixtures/small
N=${TIMING_N:-30}
[ -x "$D" ] || { echo "it_openai: SKIP ($D not built)"; exit 0; }
[ -f "$FIX/pconv_unet.safetensors" ] || { echo "it_openai: SKIP (no $FIX)"; exit 0; }
command -v node >/dev/null || { echo "it_openai: SKIP (node is not installed: Debian's nodejs)"; exit 0; }
bash scripts/npm_deps.sh || { echo "it_openai: SKIP (the pinned npm packages could not be installed)"; exit 0; }
SDK=$(realpath .deps/npm/node_modules/openai)
[ -f "$SDK/package.json" ] || { echo "it_openai: SKIP (no $SDK)"; exit 0; }

. tests/daemon.sh
it_begin it_openai

small_nets

# ---- images (Python's standard library): an RGB image, OpenAI's mask (alpha 0 = hole), the same
# hole as semipaint's own mask (white = hole), and the image with the hole in its own alpha ----
cat > "$tmp/png.py" <<'EOF'
import struct, zlib
def write(path, w, h, ch, px):
    raw = b"".join(b"\0" + bytes(px[y * w * ch:(y + 1) * w * ch]) for y in range(h))
    def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    ct = {1: 0, 3: 2, 4: 6}[ch]
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ct, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
def read(path):
    """8-bit grey, RGB or RGBA, non-interlaced: (w, h, channels, bytes)."""
    d = open(path, "rb").read()
    assert d[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    i, idat = 8, b""
    while i < len(d):
        n, t = struct.unpack(">I4s", d[i:i + 8])
        if t == b"IHDR": w, h, depth, ct, _, _, il = struct.unpack(">IIBBBBB", d[i + 8:i + 21])
        if t == b"IDAT": idat += d[i + 8:i + 8 + n]
        i += 12 + n
    assert depth == 8 and il == 0, "unexpected PNG layout"
    ch = {0: 1, 2: 3, 4: 2, 6: 4}[ct]
    raw, stride, out, prev = zlib.decompress(idat), w * ch, bytearray(), bytearray(w * ch)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - ch] if x >= ch else 0
            b = prev[x]
            c = prev[x - ch] if x >= ch else 0
            if f == 1: line[x] = (line[x] + a) & 255
            elif f == 2: line[x] = (line[x] + b) & 255
            elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += line
        prev = line
    return w, h, ch, bytes(out)
EOF
"$PY" - "$tmp" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import png
d = sys.argv[1]
w, h = 320, 200
hole = lambda x, y: 100 <= x < 160 and 50 <= y < 90
rgb = [v for y in range(h) for x in range(w) for v in (x * 255 // w, y * 255 // h, (x ^ y) & 255)]
png.write(d + "/img.png", w, h, 3, rgb)
png.write(d + "/mask_alpha.png", w, h, 4, [v for y in range(h) for x in range(w) for v in (0, 0, 0, 0 if hole(x, y) else 255)])
png.write(d + "/mask_white.png", w, h, 1, [255 if hole(x, y) else 0 for y in range(h) for x in range(w)])
png.write(d + "/img_alpha.png", w, h, 4, [v for y in range(h) for x in range(w)
                                          for v in rgb[(y * w + x) * 3:(y * w + x) * 3 + 3] + [0 if hole(x, y) else 255]])
EOF

# ---- the SDK's calls (CommonJS: the SDK from its installed folder) ----
cat > "$tmp/sdk.cjs" <<'EOF'
const fs = require("fs");
const [sdk, url, dir] = process.argv.slice(2);
const { OpenAI, toFile } = require(sdk);
const client = new OpenAI({ baseURL: url + "/v1", apiKey: "sk-dummy", maxRetries: 0 });
const file = (name) => toFile(fs.readFileSync(dir + "/" + name), name, { type: "image/png" });
const save = (res, name) => {
  fs.writeFileSync(dir + "/" + name, Buffer.from(res.data[0].b64_json, "base64"));
  const { data, ...rest } = res;
  return { n: data.length, ...rest };
};
const refused = async (params) => {
  try {
    await client.images.edit(params);
    return { thrown: false };
  } catch (e) {
    return { thrown: true, api: e instanceof OpenAI.APIError, status: e.status, message: e.message,
             type: e.type, param: e.param, code: e.code };
  }
};
(async () => {
  const out = {};
  out.mask = save(await client.images.edit({ image: await file("img.png"), mask: await file("mask_alpha.png"),
                                             prompt: "remove the square", model: "gpt-image-1", user: "it-openai" }),
                  "out_mask.png");
  out.alpha = save(await client.images.edit({ image: await file("img_alpha.png"), prompt: "fill" }), "out_alpha.png");
  out.array = save(await client.images.edit({ image: [await file("img.png"), await file("img_alpha.png")],
                                              mask: await file("mask_alpha.png"), prompt: "x", n: 1, size: "320x200",
                                              quality: "high", background: "auto", output_format: "png",
                                              response_format: "b64_json", input_fidelity: "low" }), "out_array.png");
  out.url = await refused({ image: await file("img.png"), mask: await file("mask_alpha.png"), prompt: "x",
                            response_format: "url" });
  out.n2 = await refused({ image: await file("img.png"), mask: await file("mask_alpha.png"), prompt: "x", n: 2 });
  out.size = await refused({ image: await file("img.png"), mask: await file("mask_alpha.png"), prompt: "x",
                             size: "1024x1024" });
  out.nomask_rgb = await refused({ image: await file("img.png"), prompt: "x" });
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
EOF

start_daemon "$tmp/log" || { bad "the daemon did not start"; exit 1; }

if node "$tmp/sdk.cjs" "$SDK" "$url" "$tmp" > "$tmp/sdk.json" 2> "$tmp/sdk.err"; then
  ok "client.images.edit ran (openai $(node -p "require('$SDK/package.json').version"))"
else
  bad "the SDK script failed: $(tail -n 5 "$tmp/sdk.err")"
fi
[ -s "$tmp/sdk.json" ] || echo '{}' > "$tmp/sdk.json"
# each line: ok|FAIL what
"$PY" - "$tmp" <<'EOF' > "$tmp/verdicts"
import json, sys
sys.path.insert(0, sys.argv[1])
import png
d = sys.argv[1]
r = json.load(open(d + "/sdk.json"))
def say(cond, what): print(("ok   " if cond else "FAIL ") + what)
w0, h0, _, rgb = png.read(d + "/img.png")
hole = lambda x, y: 100 <= x < 160 and 50 <= y < 90
def kept_exact(name, alpha_in):
    try:
        w, h, ch, px = png.read(d + "/" + name)
    except Exception as e:
        return say(False, f"{name} decodes as a PNG ({e})")
    say((w, h) == (w0, h0), f"{name} is {w}x{h}, the input's size {w0}x{h0}")
    diff = changed = opaque = 0
    for y in range(h0):
        for x in range(w0):
            i = (y * w0 + x)
            out = px[i * ch:i * ch + 3]
            if hole(x, y):
                changed += out != rgb[i * 3:i * 3 + 3]
                opaque += ch != 4 or px[i * ch + 3] == 255
            else:
                diff += out != rgb[i * 3:i * 3 + 3] or (ch == 4 and px[i * ch + 3] != 255)
    say(diff == 0, f"{name}: every pixel outside the hole is bit-exact ({diff} differ)")
    say(changed > 0, f"{name}: the hole was filled ({changed} of 2400 pixels changed)")
    say(opaque == 2400, f"{name}: the filled pixels are opaque ({opaque} of 2400)")
for key, name in (("mask", "out_mask.png"), ("alpha", "out_alpha.png"), ("array", "out_array.png")):
    a = r.get(key, {})
    say(a.get("n") == 1 and isinstance(a.get("created"), int), f"{key}: one image and a 'created' time ({a})")
    say(a.get("model") == "semipaint-faces-sim" and a.get("size") == "320x200" and a.get("output_format") == "png",
        f"{key}: model, size and output_format reported")
    kept_exact(name, key == "alpha")
def refused(key, param, code):
    e = r.get(key, {})
    say(e.get("thrown") and e.get("api") and e.get("status") == 400 and e.get("type") == "invalid_request_error"
        and e.get("param") == param and e.get("code") == code and e.get("message"),
        f"{key}: the SDK throws an APIError 400 {code} on {param} ({e.get('message')})")
refused("url", "response_format", "unsupported_value")
refused("n2", "n", "unsupported_value")
refused("size", "size", "unsupported_value")
e = r.get("nomask_rgb", {})
say(e.get("status") == 422 and e.get("code") == "no_alpha" and e.get("param") == "image",
    f"no mask and an image without alpha: 422 no_alpha on image ({e.get('message')})")
EOF
while IFS= read -r line; do
  echo "$line"
  case $line in ok*) passes=$((passes + 1)) ;; *) fails=$((fails + 1)) ;; esac
done < "$tmp/verdicts"

# ---- OpenAI's error shape on the wire (curl) ----
e=$(curl -s -w ' %{http_code}' -F prompt=x "$url/v1/images/edits")
check "no image: 400 in OpenAI's shape" "$PY" -c '
import json, sys
body, status = sys.argv[1].rsplit(" ", 1)
e = json.loads(body)["error"]
assert status == "400" and sorted(e) == ["code", "message", "param", "type"], (status, e)
assert e["type"] == "invalid_request_error" and e["param"] == "image" and e["code"] == "missing_field", e' "$e"
e=$(curl -s -w ' %{http_code}' -F image=@"$tmp/img.png" -F mask=@"$tmp/mask_alpha.png" -F prompt=x -F bogus=1 "$url/v1/images/edits")
check "an unknown parameter: 400 unknown_field naming it" "$PY" -c '
import json, sys
body, status = sys.argv[1].rsplit(" ", 1)
e = json.loads(body)["error"]
assert status == "400" and e["param"] == "bogus" and e["code"] == "unknown_field", e' "$e"
e=$(curl -s -w ' %{http_code}' -H 'Content-Type: application/json' -d '{"prompt":"x"}' "$url/v1/images/edits")
check "a JSON body: 415 with a null param" "$PY" -c '
import json, sys
body, status = sys.argv[1].rsplit(" ", 1)
e = json.loads(body)["error"]
assert status == "415" and e["param"] is None and e["code"] == "unsupported_media_type", e' "$e"
check "the user field is logged" grep -q '"user":"it-openai"' "$tmp/log"

# ---- added server time: Server-Timing total, median of N requests on each route, same image and hole ----
if [ "$N" -gt 0 ]; then
  med() { sort -n | awk '{a[NR] = $1} END {print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
  total() { tr -d '\r' | sed -n 's/^[Ss]erver-[Tt]iming:.*total;dur=\([0-9.]*\).*/\1/p'; }
  for i in $(seq 1 "$N"); do
    curl -s -o /dev/null -D - -F image=@"$tmp/img.png" -F mask=@"$tmp/mask_white.png" -F format=png "$url/v1/inpaint" | total
    curl -s -o /dev/null -D - -F image=@"$tmp/img.png" -F mask=@"$tmp/mask_alpha.png" -F prompt=x "$url/v1/images/edits" | total >&3
  done > "$tmp/t_inpaint" 3> "$tmp/t_edits"
  a=$(med < "$tmp/t_inpaint"); b=$(med < "$tmp/t_edits")
  echo "timing: Server-Timing total, median of $N: /v1/inpaint (png, binary answer) ${a} ms, /v1/images/edits (b64_json) ${b} ms, added $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", b - a}') ms"
  check "$N timings on each route" test "$(wc -l < "$tmp/t_edits")" = "$N" -a "$(wc -l < "$tmp/t_inpaint")" = "$N"
fi

kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
pid=""
it_end
