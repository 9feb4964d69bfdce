"""A CLIP tokenizer for the shapes world, built from our own vocabulary.

``vocab.json``/``merges.txt`` in CLIP's byte-level BPE format: every byte as a token (with
and without the end-of-word marker ``</w>``) so that any text tokenizes, every vocabulary
word as one whole-word token, and merge rules that build each word from its characters.
Words outside the vocabulary fall back to characters (no crash, no unknown token).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from .world import VOCABULARY

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# Captions pad to 24 tokens, not CLIP's 77: the grammar's longest caption is 13, and room is left for
# a few unknown words spelt out in characters. Cross-attention then sees 24 keys instead of 77,
# and the base trains 2,502 steps in its 2,000 s on the 2-core CPU instead of 1,988 (0.80 s a step
# instead of 1.01, batch 64). The shipped weights were trained at 77.
MAX_LENGTH = 24


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Reference BPE (as CLIP's): lowest-rank adjacent pair first."""
    toks = list(word[:-1]) + [word[-1] + "</w>"]
    while len(toks) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(toks, toks[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        a, b = toks[i], toks[i + 1]
        out, j = [], 0
        while j < len(toks):
            if j < len(toks) - 1 and toks[j] == a and toks[j + 1] == b:
                out.append(a + b)
                j += 2
            else:
                out.append(toks[j])
                j += 1
        toks = out
    return toks


def build_vocab(words=VOCABULARY) -> tuple[dict[str, int], list[tuple[str, str]]]:
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    words = sorted(set(words), key=lambda w: (-len(w), w))
    for _ in range(10):  # add merges until every word is one token (a fixed point)
        changed = False
        for w in words:
            toks = _bpe(w, ranks)
            while len(toks) > 1:
                pair = (toks[0], toks[1])
                if pair not in ranks:
                    ranks[pair] = len(merges)
                    merges.append(pair)
                toks = [toks[0] + toks[1]] + toks[2:]
                changed = True
        if not changed:
            break
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            tokens.append(a + b)
            seen.add(a + b)
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tokenizer(folder: str | Path, words=VOCABULARY):
    """Write vocab.json/merges.txt and the tokenizer config; return the loaded CLIPTokenizer."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(words)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LENGTH, "do_lower_case": True,
        "bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS,
        "add_prefix_space": False, "errors": "replace"}, indent=1))
    tok = CLIPTokenizer.from_pretrained(str(folder))
    for w in words:
        ids = tok(w, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise RuntimeError(f"word {w!r} tokenizes to {tok.convert_ids_to_tokens(ids)}")
    return tok
