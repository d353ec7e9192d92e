#!/usr/bin/env python3
"""Tokenization agreement with llama.cpp (through llama-cpp-python) on the same GGUF file.

Generates a deterministic set of diverse strings (accents, CJK, emoji, code, runs of spaces and
newlines, digits, contractions, special tokens, random code points), tokenizes each with
`flexinfer tokenize --file` and with llama_cpp.Llama(model, vocab_only=True).tokenize(...), with and
without special-token parsing, and requires identical ids for every string.

usage: tokenize_agreement.py FLEXINFER_BINARY [MODEL] [--count N] [--seed S] [--pre NAME ...]
--pre NAME also runs the comparison on a copy of the model whose tokenizer.ggml.pre is NAME (same
vocabulary and merges, another pre-tokenizer regex on both sides), e.g. --pre llama-bpe qwen2 gpt-4o gpt2 default.
Exit: 0 all identical, 1 a difference, 77 skipped (llama_cpp or the model missing).
"""
import argparse
import os
import random
import subprocess
import sys
import tempfile

SKIP = 77

FIXED = [
    "", " ", "  ", "\n", "\n\n", " \n", "\t", "\r\n", "Hello world", "Hello, world!", " Hello", "hello  world",
    "Hello world 12345  x", "3.14159", "1,000,000", "2024-11-22", "0x7fff", "a1b2c3", "x = 42;",
    "I'm here, you're there, they've gone, we'll see, he'd go, it's, don't", "I'M SHOUTING, YOU'RE, IT'S",
    "café naïve résumé façade jalapeño Ångström", "Straße, Äpfel, Öl, Übermut", "中文分词测试", "日本語のテキスト、カタカナ",
    "한국어 텍스트", "Привет, мир!", "Γειά σου Κόσμε", "مرحبا بالعالم", "नमस्ते दुनिया", "שלום עולם", "สวัสดีชาวโลก",
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇯🇵", "I ❤️ tokenizers 🤖✨", "e\u0301", "a\u0308o\u0308", "∑ x² ≤ ∞ ∂f/∂x",
    "def f(x):\n    return x * 2\n", "int main(void) { return 0; }", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    "<html><body class=\"x\">Hi</body></html>", "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "    indented\n        more\n", "trailing spaces   ", "   leading spaces", "a\n\n\n\nb", "a \n b", "x\t\ty",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "<|im_start|>", "<|im_end|>", "<|endoftext|>",
    "<|im_start|><|im_end|>", "<|im_start", "im_start|>", "<|im_end|>>", "<<|im_start|>", "text<|endoftext|>more",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n",
    "<repo_name>", "<file_sep>", "<filename>", "www.example.com/path?q=1&r=2#frag", "user@example.org",
    "$100.50 + €20 = ¥?", "!!!???...", "---===___", "((()))[[[]]]{{{}}}", "'''", "\"\"\"docstring\"\"\"",
    "ALLCAPS lowercase MiXeD", "can't won't shouldn't", "The quick brown fox jumps over the lazy dog.",
    "\u00a0non-breaking\u00a0space", "zero\u200bwidth", "\u3000ideographic space", "tab\tand\vvertical\ffeed",
    "1 22 333 4444 55555 666666 7777777", "０１２３ full-width digits", "١٢٣ Arabic-Indic digits", "Ⅻ roman",
]

ALPHABETS = {
    "ascii": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "digits": "0123456789",
    "punct": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "space": " \t\n\r",
    "accents": "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿœšžÀÉÎÕÜÇŒ",
    "cjk": "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年日本語漢字ひらがなカタカナ한국어",
    "emoji": ["😀", "😂", "🥲", "👍", "👍🏽", "❤️", "🔥", "🚀", "🇺🇸", "👩‍💻", "🤖", "✨", "🎉", "🙏🏿"],
    "cyrillic_greek": "абвгдеёжзийклмнопрстуфхцчшщъыьэюяΑΒΓΔΕΖαβγδεζηθλμπσω",
    "other": "अआइईउऊकखगघمرحباשלוםกขฃ∑∏∫√∞≈≠≤≥←→↑↓•…€£¥©®™°±×÷",
    "special": ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start", "|>", "<|"],
    "words": ["the", " the", "token", "izer", " Hello", "world", "I'm", "you're", "'s", "'LL", " 2024", "def",
              "return", "    ", "\n\n", "  \n", "café", "naïve", "東京", "🤗", "x", "==", "->", "//", "/*", "*/"],
}

# Malformed UTF-8: both engines read a byte that starts no valid sequence as U+FFFD.
INVALID_UTF8 = [
    b"\xf2", b"a\xffb", b"\xc3", b"\xe4\xb8", b"x\x80y", b"\xc0\x80", b"\xed\xa0\x80", b"caf\xe9 au lait",
    b"\xf0\x9f\x98", b"\xf0\x9f\x98 \x80\x80", b"12\xfe34", b"<|im_start|>\xff<|im_end|>",
]

CODE = [
    "import numpy as np\nx = np.zeros((3, 4))\nprint(x.shape)",
    "fn main() {\n    let v: Vec<i32> = (0..10).collect();\n}",
    "SELECT id, name FROM users WHERE age > 30 ORDER BY name;",
    "#include <stdio.h>\nint main() { printf(\"%d\\n\", 42); }",
    "const f = async (x) => { await g(x); return x ?? 0; };",
    "    if (a && b || !c) {\n        return;\n    }\n",
    "$ ls -la | grep '\\.c$' > out.txt 2>&1",
]


def random_text(rng):
    kind = rng.randrange(8)
    if kind == 0:  # random code points from the BMP (no surrogates) and a few beyond
        out = []
        for _ in range(rng.randint(1, 24)):
            cp = rng.choice([rng.randint(0x20, 0x7E), rng.randint(0xA0, 0x2FFF), rng.randint(0x3000, 0xD7FF),
                             rng.randint(0xE000, 0xFFFD), rng.randint(0x1F300, 0x1FAFF), rng.randint(0x20000, 0x2A6DF)])
            out.append(chr(cp))
        return "".join(out)
    if kind == 1:  # runs of whitespace around words and digits
        parts = []
        for _ in range(rng.randint(1, 8)):
            parts.append(rng.choice(["a", "word", "42", "7", "é", "中", "😀", "x1", "'s"]))
            parts.append("".join(rng.choice(" \n\t\r") for _ in range(rng.randint(0, 6))))
        return "".join(parts)
    if kind == 2:  # digits of every length, with separators
        return rng.choice(["", " ", "$", "v"]) + "".join(
            rng.choice("0123456789" + (".,- " if rng.random() < 0.5 else "")) for _ in range(rng.randint(1, 30)))
    if kind == 3:  # code with random edits
        s = rng.choice(CODE)
        i = rng.randrange(len(s) + 1)
        return s[:i] + rng.choice(["", " ", "\n", "\t", "  ", "😀", "é", "<|im_end|>"]) + s[i:]
    if kind == 4:  # special tokens embedded in text
        parts = []
        for _ in range(rng.randint(1, 6)):
            parts.append(rng.choice(ALPHABETS["special"] + ALPHABETS["words"] + ["\n", " ", "user", "assistant"]))
        return "".join(parts)
    # mixtures of alphabets
    names = list(ALPHABETS)
    out = []
    for _ in range(rng.randint(1, 12)):
        alpha = ALPHABETS[rng.choice(names)]
        for _ in range(rng.randint(1, 5)):
            out.append(rng.choice(alpha))
    return "".join(out)


def escape(s):
    """One line of the --file format: the bytes with \\, \\n, \\t and control bytes escaped."""
    buf = bytearray()
    for b in s:
        if b == 0x5C:
            buf += b"\\\\"
        elif b == 0x0A:
            buf += b"\\n"
        elif b == 0x09:
            buf += b"\\t"
        elif b < 0x20 or b == 0x7F:
            buf += b"\\x%02x" % b
        else:
            buf.append(b)
    return bytes(buf)


def gguf_with_pre(src, dst, pre):
    """Copies a GGUF v2/v3 file, replacing the string tokenizer.ggml.pre (added if absent)."""
    import struct
    with open(src, "rb") as f:
        data = f.read()
    if data[:4] != b"GGUF":
        raise SystemExit("%s is not a GGUF file" % src)
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    pos = 24
    scalar = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def skip_value(pos, t):
        if t in scalar:
            return pos + scalar[t]
        if t == 8:
            (n,) = struct.unpack_from("<Q", data, pos)
            return pos + 8 + n
        if t == 9:
            et, n = struct.unpack_from("<IQ", data, pos)
            pos += 12
            if et in scalar:
                return pos + n * scalar[et]
            for _ in range(n):
                pos = skip_value(pos, et)
            return pos
        raise SystemExit("unknown GGUF type %d" % t)

    kvs = []
    alignment = 32
    for _ in range(n_kv):
        start = pos
        (klen,) = struct.unpack_from("<Q", data, pos)
        key = data[pos + 8:pos + 8 + klen].decode()
        pos += 8 + klen
        (t,) = struct.unpack_from("<I", data, pos)
        end = skip_value(pos + 4, t)
        if key == "general.alignment":
            (alignment,) = struct.unpack_from("<I", data, pos + 4)
        if key != "tokenizer.ggml.pre":
            kvs.append(data[start:end])
        pos = end
    key = b"tokenizer.ggml.pre"
    kvs.append(struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, len(pre)) + pre.encode())
    tensor_start = pos
    for _ in range(n_tensors):
        (nlen,) = struct.unpack_from("<Q", data, pos)
        pos += 8 + nlen
        (ndim,) = struct.unpack_from("<I", data, pos)
        pos += 4 + 8 * ndim + 4 + 8
    tensor_infos = data[tensor_start:pos]
    data_start = (pos + alignment - 1) // alignment * alignment
    out = bytearray(data[:8] + struct.pack("<QQ", n_tensors, len(kvs)))
    for kv in kvs:
        out += kv
    out += tensor_infos
    out += b"\0" * ((-len(out)) % alignment)
    out += data[data_start:]
    with open(dst, "wb") as f:
        f.write(out)


def flexinfer_ids(binary, model, strings, parse_special):
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        for s in strings:
            f.write(escape(s) + b"\n")
        path = f.name
    try:
        cmd = [binary, "tokenize", "-m", model, "--file", path]
        if not parse_special:
            cmd.append("--no-special")
        res = subprocess.run(cmd, capture_output=True, check=False)
    finally:
        os.unlink(path)
    if res.returncode != 0:
        sys.exit("flexinfer tokenize failed (%d): %s" % (res.returncode, res.stderr.decode(errors="replace")))
    lines = res.stdout.decode().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != len(strings):
        sys.exit("flexinfer printed %d lines for %d strings" % (len(lines), len(strings)))
    return [[int(x) for x in line.split()] for line in lines]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--count", type=int, default=600)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--pre", nargs="*", default=[])
    args = ap.parse_args()
    root = os.environ.get("FI_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
    model = args.model or os.path.join(root, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    try:
        import llama_cpp
    except ImportError:
        print("skipped: llama_cpp not installed")
        return SKIP
    if not os.path.exists(model):
        print("skipped: model %s not found (run scripts/get_model.sh)" % model)
        return SKIP

    rng = random.Random(args.seed)
    strings = list(FIXED)
    while len(strings) < args.count - len(INVALID_UTF8):
        strings.append(random_text(rng))
    strings = [s.encode("utf-8") for s in strings] + INVALID_UTF8
    status = compare(args.binary, model, strings, "", args.seed)
    for pre in args.pre:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "pre.gguf")
            gguf_with_pre(model, path, pre)
            status |= compare(args.binary, path, strings, " [pre %s]" % pre, args.seed)
    return status


def compare(binary, model, strings, label, seed):
    import llama_cpp
    peer = llama_cpp.Llama(model, vocab_only=True, verbose=False)
    failures = 0
    compared = 0
    for parse_special in (True, False):
        ours = flexinfer_ids(binary, model, strings, parse_special)
        for s, got in zip(strings, ours):
            want = peer.tokenize(s, add_bos=True, special=parse_special)
            compared += 1
            if got != want:
                failures += 1
                if failures <= 10:
                    print("DIFF%s special=%s %r\n  flexinfer: %s\n  llama.cpp: %s" % (label, parse_special, s, got, want))
    print("tokenize agreement%s: %d/%d identical (%d strings x special on/off, seed %d)"
          % (label, compared - failures, compared, len(strings), seed))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
