"""safetensors_io.py: reads and writes safetensors files with the standard library and numpy only.

Format (docs/weights.md): an 8-byte little-endian unsigned header length N, N bytes of
JSON header, then the raw little-endian tensor data. The header maps each tensor name to
{"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the start of the data)
and holds "__metadata__": {str: str}. We pad the header with spaces to a multiple of 8 and
write tensors in sorted name order with contiguous offsets, so equal inputs give equal bytes.

Run `python3 safetensors_io.py --self-check` for the round-trip tests.
"""
import json
import os
import struct
import sys
import tempfile

import numpy as np

# safetensors dtype name -> little-endian numpy dtype. BF16 has no numpy type: it is stored
# as raw 16-bit words, written from torch.bfloat16 tensors and widened to float32 on load.
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NUMPY_TO_ST = {
    np.dtype("float64"): "F64", np.dtype("float32"): "F32", np.dtype("float16"): "F16",
    np.dtype("int64"): "I64", np.dtype("int32"): "I32", np.dtype("int16"): "I16", np.dtype("int8"): "I8",
    np.dtype("uint64"): "U64", np.dtype("uint32"): "U32", np.dtype("uint16"): "U16", np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}
MAX_HEADER = 100 * 1024 * 1024


def _to_numpy(name, t):
    """Returns (safetensors dtype, little-endian numpy array) for a torch tensor or array-like."""
    if hasattr(t, "detach"):  # torch.Tensor, imported lazily so numpy-only users need no torch
        import torch
        t = t.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            return "BF16", t.view(torch.int16).numpy().view(np.dtype("<u2"))
        t = t.numpy()
    a = np.asarray(t)
    dt = _NUMPY_TO_ST.get(a.dtype.newbyteorder("=")) if a.dtype.byteorder in "<>" else _NUMPY_TO_ST.get(a.dtype)
    if dt is None:
        raise ValueError(f"tensor {name!r}: unsupported dtype {a.dtype}")
    return dt, a.astype(DTYPES[dt], copy=False)  # tobytes() writes C order


def encode(tensors, metadata=None):
    """Returns the bytes of a safetensors file holding `tensors` (name -> array) and `metadata`."""
    metadata = metadata or {}
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError(f"metadata {k!r}: keys and values must be str")
    header = {"__metadata__": dict(metadata)} if metadata else {}
    blobs, off = [], 0
    for name in sorted(tensors):
        if name == "__metadata__" or not isinstance(name, str) or not name:
            raise ValueError(f"bad tensor name {name!r}")
        dt, a = _to_numpy(name, tensors[name])
        b = a.tobytes()
        header[name] = {"dtype": dt, "shape": [int(d) for d in a.shape], "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((-len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def save(path, tensors, metadata=None):
    """Writes `tensors` (dict name -> np.ndarray or torch.Tensor) and `metadata` (dict str -> str)
    to `path` atomically (temporary file in the same directory, fsync, os.replace)."""
    data = encode(tensors, metadata)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def decode(buf, what="<buffer>"):
    """Parses safetensors bytes; returns (dict name -> np.ndarray, metadata dict). Arrays are
    copies in native byte order; BF16 tensors are widened to float32. Raises ValueError naming
    `what` and the tensor on any inconsistency (bad header, overlapping or missing data, size)."""
    if len(buf) < 8:
        raise ValueError(f"{what}: truncated (no header length)")
    (n,) = struct.unpack("<Q", buf[:8])
    if n > MAX_HEADER or 8 + n > len(buf):
        raise ValueError(f"{what}: header length {n} exceeds file size {len(buf)}")
    try:
        header = json.loads(bytes(buf[8:8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{what}: bad JSON header: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{what}: header is not a JSON object")
    meta = header.pop("__metadata__", {}) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ValueError(f"{what}: __metadata__ must map str to str")
    data = memoryview(buf)[8 + n:]
    out, spans = {}, []
    for name, info in header.items():
        try:
            dt, shape, (b, e) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{what}: tensor {name!r}: malformed header entry") from None
        if dt not in DTYPES:
            raise ValueError(f"{what}: tensor {name!r}: unknown dtype {dt!r}")
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"{what}: tensor {name!r}: bad shape {shape}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * DTYPES[dt].itemsize
        if not (isinstance(b, int) and isinstance(e, int) and 0 <= b <= e):
            raise ValueError(f"{what}: tensor {name!r}: bad data_offsets {[b, e]}")
        if e - b != nbytes:
            raise ValueError(f"{what}: tensor {name!r}: {e - b} bytes for shape {shape} {dt} ({nbytes} expected)")
        if e > len(data):
            raise ValueError(f"{what}: tensor {name!r}: data ends at {e} but file has {len(data)} data bytes (truncated)")
        a = np.frombuffer(data[b:e], dtype=DTYPES[dt]).reshape(shape)
        if dt == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = a.astype(a.dtype.newbyteorder("="), copy=True)
        spans.append((b, e, name))
    spans.sort()
    pos = 0
    for b, e, name in spans:
        if b != pos:
            raise ValueError(f"{what}: tensor {name!r}: data at {b}, expected {pos} (gap or overlap)")
        pos = e
    if pos != len(data):
        raise ValueError(f"{what}: {len(data) - pos} trailing bytes after the last tensor")
    return out, dict(meta)


def load(path):
    """Reads a safetensors file; returns (dict name -> np.ndarray, metadata dict). See decode()."""
    with open(path, "rb") as f:
        buf = f.read()
    return decode(buf, path)


def _self_check():
    import torch
    rng = np.random.default_rng(0)
    tensors = {
        "b.f32": rng.standard_normal((2, 3, 4)).astype(np.float32),
        "a.f16": rng.standard_normal((5,)).astype(np.float16),
        "c.i64": np.arange(-3, 4, dtype=np.int64),
        "d.u8": np.arange(7, dtype=np.uint8),
        "e.scalar": np.array(2.5, dtype=np.float32),
        "f.empty": np.zeros((0, 3), dtype=np.float32),
        "g.bool": np.array([True, False, True]),
        "h.big_endian": np.arange(6, dtype=">f4").reshape(2, 3),
        "i.torch": torch.arange(12, dtype=torch.float32).reshape(3, 4).t(),  # non-contiguous
    }
    bf = torch.tensor([1.0, -2.5, 3.140625, 1e30], dtype=torch.bfloat16)
    tensors["j.bf16"] = bf
    meta = {"semipaint": json.dumps({"format": 1}), "x": "y"}
    buf = encode(tensors, meta)
    (n,) = struct.unpack("<Q", buf[:8])
    assert n % 8 == 0, "header not padded to 8"
    hdr = json.loads(buf[8:8 + n])
    names = [k for k in hdr if k != "__metadata__"]
    assert names == sorted(names), "tensors not in sorted order"
    offs = [hdr[k]["data_offsets"] for k in names]
    assert offs[0][0] == 0 and all(offs[i][1] == offs[i + 1][0] for i in range(len(offs) - 1)), "offsets not contiguous"
    assert hdr["j.bf16"]["dtype"] == "BF16" and hdr["a.f16"]["dtype"] == "F16" and hdr["c.i64"]["dtype"] == "I64"
    got, gmeta = decode(buf)
    assert gmeta == meta, gmeta
    assert set(got) == set(tensors)
    for k, v in tensors.items():
        if k == "j.bf16":
            assert got[k].dtype == np.float32 and np.array_equal(got[k], v.float().numpy()), (k, got[k])
            continue
        ref = v.numpy() if hasattr(v, "numpy") else v
        assert got[k].shape == ref.shape and np.array_equal(got[k], ref), k
        assert got[k].dtype == ref.dtype.newbyteorder("="), (k, got[k].dtype)
    # Little-endian on disk regardless of the host: the float 1.0 in "b.f32" style layout.
    one = encode({"x": np.array([1.0], dtype=np.float32)})
    assert one[-4:] == b"\x00\x00\x80\x3f"
    # Atomic save and load through a file.
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "t.safetensors")
        save(p, tensors, meta)
        assert open(p, "rb").read() == buf, "save() bytes differ from encode()"
        assert [f for f in os.listdir(d)] == ["t.safetensors"], "temporary file left behind"
        got2, _ = load(p)
        assert np.array_equal(got2["b.f32"], tensors["b.f32"])
    # Corruptions are detected and name the tensor.
    for bad, expect in ((buf[:-3], "truncated"), (buf[:5], "truncated"), (buf + b"\0" * 4, "trailing")):
        try:
            decode(bad)
        except ValueError as e:
            assert expect in str(e), (expect, str(e))
        else:
            raise AssertionError(f"corruption not detected ({expect})")
    # A shape that disagrees with the byte count.
    h2 = dict(hdr)
    h2["b.f32"] = dict(hdr["b.f32"], shape=[2, 3, 5])
    hb = json.dumps(h2).encode()
    hb += b" " * ((-len(hb)) % 8)
    try:
        decode(struct.pack("<Q", len(hb)) + hb + buf[8 + n:])
    except ValueError as e:
        assert "b.f32" in str(e), str(e)
    else:
        raise AssertionError("mis-shaped tensor not detected")
    print("safetensors_io self-check: OK")


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-check"]:
        _self_check()
    else:
        sys.exit("usage: safetensors_io.py --self-check")
