#!/usr/bin/env python3
"""Generates tests/reference/tokenizer/*.tsv: expected ids and decodes from the reference
implementations, for tests/test_tokenizer_reference.c.
  - Hugging Face tokenizers (pip install tokenizers==0.23.3) for qwen3 and deepseek-v3 tokenizer.json:
    encodings of ../shared/data/text excerpts and of a UTF-8 torture set, and decodes of id sequences
    that cut multi-byte characters (the U+FFFD replacement behaviour).
  - tiktoken (pip install tiktoken==0.9.0) for Kimi-K2 with its original fancy-regex pattern (class
    intersection &&), on text mixing Han and other letters: the oracle for krasis's PCRE2 rewrite.
Line formats (text and expected decodes hex-encoded UTF-8, ids space-separated):
  enc  <hex text>  <ids>          (no special tokens added; special tokens in the text recognised)
  dec  <ids>       <hex text>     (skip_special_tokens=False)
Run from the repository root: python3 tools/make_tokenizer_reference.py"""
import base64, os, random

from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "..", "shared", "data")
OUT = os.path.join(ROOT, "tests", "reference", "tokenizer")

TORTURE = [
    "Hello, world! Mixed 中文字符 and 日本語のテキスト, 한국어 텍스트, Ελληνικά, русский, עברית, العربية.",
    "Emoji: 😊🏃‍♂️👩‍👩‍👧‍👦🇯🇵 ✅ ❤️ 🚀🚀🚀",
    "Combining: e\u0301 a\u0308 o\u0302\u0323 n\u0303 — precomposed: é ä ộ ñ",
    "NFC-sensitive: \u212b vs \u00c5 vs A\u030a; \u2126 vs \u03a9; Hangul \u1100\u1161\u11a8 vs 각",
    "Whitespace runs:" + " " * 37 + "end\t\t\tTabs\n\n\n\nNewlines" + " \n" * 5 + "\u3000\u3000ideographic",
    "Digits: 0 12 345 6789 1234567890 ١٢٣٤ ５６７ ½ ² 3.14159 1,000,000",
    "CRLF line one\r\nline two\r\n\r\nline four\rCR only",
    "Code: def f(x):\n    return x**2  # comment\n\tif (a && b || !c) { y = x[i] + 'str' + \"dq\"; }",
    "Contractions: I'm, you're, he's, we've, they'll, I'd, DON'T, it'S",
    "Specials inline: <|im_start|>user\nhi<|im_end|> and <｜begin▁of▁sentence｜> and <think>x</think>",
    "Zero-width: a\u200bb\u200cc\u200dd\ufeffe and soft\u00adhyphen, NBSP\u00a0here",
    "Rare planes: 𝕳𝖊𝖑𝖑𝖔 𐍈 𓀀 🂡 \U0001f9ea",
    "Punctuation soup: ...!!!???---___***###@@@$$$%%%^^^&&&((()))[[[]]]{{{}}}<<<>>>",
    "   leading spaces and trailing   ",
    "\n\nleading newlines",
    "Vietnamese: Tiếng Việt có dấu, Thai: ภาษาไทย, Devanagari: हिन्दी",
    "Mixed Han+Latin: 我爱Python和JavaScript，还有C++与Rust。Kimi的回答很好",
    "",
    " ",
    "a",
]

KIMI_TEXTS = [
    "我爱Python和JavaScript，还有C++与Rust。",
    "Kimi的回答：HelloWorld你好世界ÀÉÎõü日本語カタカナひらがな",
    "ǅungla Ǆ ǈ mixedCASE ABCdef ΑΒΓδεζ 中Ab文Cd字",
    "I'M here, you'RE there; 他's not 她'll",
    "e\u0301\u4e2d\u0301 a\u0308b 한국어漢字mix",
    "Numbers 12345 and 一二三 and ٣٤٥",
]


def excerpts():
    out = []
    rng = random.Random(1234)
    for name in ("tinyshakespeare.txt", "pride_and_prejudice.txt"):
        text = open(os.path.join(DATA, "text", name), encoding="utf-8").read()
        for _ in range(12):
            a = rng.randrange(0, len(text) - 3000)
            out.append(text[a:a + rng.randrange(200, 3000)])
    return out


def hx(s):
    return s.encode("utf-8").hex() if isinstance(s, str) else s.hex()


def write_hf(name, path):
    tok = Tokenizer.from_file(path)
    lines = []
    for text in TORTURE + excerpts():
        ids = tok.encode(text, add_special_tokens=False).ids
        lines.append(f"enc\t{hx(text)}\t{' '.join(map(str, ids))}")
    # Decodes that cut characters: every prefix of each non-ASCII torture string's ids, plus each single
    # token, so partial UTF-8 sequences and their U+FFFD replacement are covered.
    seen = set()
    for text in TORTURE:
        if text.isascii():
            continue
        ids = tok.encode(text, add_special_tokens=False).ids[:40]
        for k in range(1, len(ids) + 1):
            for seq in (ids[:k], ids[k - 1:k], ids[k - 1:]):
                key = tuple(seq)
                if key in seen:
                    continue
                seen.add(key)
                lines.append(f"dec\t{' '.join(map(str, seq))}\t{hx(tok.decode(seq, skip_special_tokens=False))}")
    open(os.path.join(OUT, f"{name}.tsv"), "w").write("\n".join(lines) + "\n")
    print(name, len(lines), "lines")


KIMI_PATTERN = "|".join([
    r"""[\p{Han}]+""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])


def write_kimi():
    import tiktoken

    ranks = {}
    for line in open(os.path.join(DATA, "tokenizers", "kimi-k2", "tiktoken.model"), "rb"):
        if line.strip():
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    enc = tiktoken.Encoding("kimi-k2", pat_str=KIMI_PATTERN, mergeable_ranks=ranks, special_tokens={})
    lines = []
    for text in KIMI_TEXTS + [t for t in TORTURE if "<|" not in t]:
        ids = enc.encode_ordinary(text)
        lines.append(f"enc\t{hx(text)}\t{' '.join(map(str, ids))}")
    for text in TORTURE[:4]:
        ids = enc.encode_ordinary(text)[:30]
        for k in range(1, len(ids) + 1):
            seq = ids[:k]
            lines.append(f"dec\t{' '.join(map(str, seq))}\t{hx(enc.decode(seq, errors='replace'))}")
    open(os.path.join(OUT, "kimi-k2.tsv"), "w").write("\n".join(lines) + "\n")
    print("kimi-k2", len(lines), "lines")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    write_hf("qwen3", os.path.join(DATA, "tokenizers", "qwen3", "tokenizer.json"))
    write_hf("deepseek-v3", os.path.join(DATA, "tokenizers", "deepseek-v3", "tokenizer.json"))
    write_kimi()
