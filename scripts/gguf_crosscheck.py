#!/usr/bin/env python3
"""Cross-checks `flexinfer info --tensors` against the reference Python reader (PyPI `gguf`,
maintained with llama.cpp) on real files: version, every key with its value type and array
length, every tensor's name, type, shape, byte size and absolute data offset, in file order.

usage: scripts/gguf_crosscheck.py FLEXINFER_BINARY MODEL.gguf [MODEL.gguf ...]
Needs `gguf` importable (e.g. pip install --target DIR gguf; PYTHONPATH=DIR). Exit 0 on agreement.
"""
import re
import subprocess
import sys

VALUE_TYPES = ["u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"]


def parse_info(text):
    version = int(re.search(r"^gguf version: (\d+)", text, re.M).group(1))
    kvs, tensors, section = {}, [], None
    for line in text.splitlines():
        if line.startswith("metadata:"):
            section = "kv"
            continue
        if line.startswith("tensors:"):
            section = "summary"
            continue
        if section == "summary" and line.startswith("  name "):
            section = "tensors"
            continue
        if section == "kv" and line.startswith("  "):
            m = re.match(r"^  (\S+) +(?:array\[(\w+) x (\d+)\]|(\w+) = )", line)
            if m.group(2):
                kvs[m.group(1)] = ("array", m.group(2), int(m.group(3)))
            else:
                kvs[m.group(1)] = (m.group(4), None, None)
        elif section == "tensors" and line.startswith("  "):
            m = re.match(r"^  (\S+) +(\S+) +\[([0-9, ]+)\] +(\d+) +(\d+)$", line)
            tensors.append((m.group(1), m.group(2), [int(x) for x in m.group(3).split(",")], int(m.group(4)),
                            int(m.group(5))))
    return version, kvs, tensors


def reference(path):
    import gguf
    r = gguf.GGUFReader(path)
    version = int(r.fields["GGUF.version"].parts[-1][0])
    kvs = {}
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue
        t = VALUE_TYPES[int(f.types[0])]
        if t == "array":
            # The reference records no element type for an empty array and flattens nested
            # arrays: normalise both so only real disagreements remain.
            kvs[name] = ("array", VALUE_TYPES[int(f.types[1])] if len(f.types) > 1 else "?", len(f.data))
        else:
            kvs[name] = (t, None, None)
    tensors = [(t.name, t.tensor_type.name, [int(x) for x in t.shape], int(t.n_bytes), int(t.data_offset))
               for t in r.tensors]
    return version, kvs, tensors


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    binary, models = sys.argv[1], sys.argv[2:]
    bad = 0
    for path in models:
        out = subprocess.run([binary, "info", "-m", path, "--tensors"], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{path}: flexinfer info failed: {out.stderr.strip()}")
            bad += 1
            continue
        ours, ref = parse_info(out.stdout), reference(path)
        for k, (t, elem, count) in ref[1].items():
            mine = ours[1].get(k)
            if mine and t == "array" and ((elem == "?" and count == 0 and mine[2] == 0) or
                                          (elem == "array" and mine[1] == "array")):
                ref[1][k] = mine
        problems = []
        if ours[0] != ref[0]:
            problems.append(f"version {ours[0]} != {ref[0]}")
        if ours[1] != ref[1]:
            for k in sorted(set(ours[1]) | set(ref[1])):
                if ours[1].get(k) != ref[1].get(k):
                    problems.append(f"key {k}: ours {ours[1].get(k)} reference {ref[1].get(k)}")
        if len(ours[2]) != len(ref[2]):
            problems.append(f"{len(ours[2])} tensors != {len(ref[2])}")
        for a, b in zip(ours[2], ref[2]):
            if a != b:
                problems.append(f"tensor ours {a} reference {b}")
        if problems:
            bad += 1
            print(f"{path}: {len(problems)} differences")
            for p in problems[:20]:
                print("  " + p)
        else:
            print(f"{path}: agree (version {ref[0]}, {len(ref[1])} keys, {len(ref[2])} tensors)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
