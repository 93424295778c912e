"""CLIP's byte-pair tokenizer without torch: open_clip's `SimpleTokenizer`, numpy out.

A port of open_clip.tokenizer.SimpleTokenizer (itself OpenAI CLIP's, MIT licence) in its
default configuration (clean="lower", no extra special tokens, truncation): importing open_clip's
tokenizer imports torch and open_clip, seconds a cold ONNX text query must not spend. It reads
open_clip's own vocabulary file, found without importing open_clip. Tested token for token
against open_clip's tokenizer (tests/clip/test_cold_query.py).
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import os
from functools import lru_cache

import numpy as np

DEFAULT_CONTEXT_LENGTH = 77


def default_bpe() -> str:
    spec = importlib.util.find_spec("open_clip")  # locates the package, does not import it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open_clip is not installed: its vocabulary file is needed")
    return os.path.join(list(spec.submodule_search_locations)[0], "bpe_simple_vocab_16e6.txt.gz")


@lru_cache
def bytes_to_unicode() -> dict:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _pairs(word):
    return {a + " " + b for a, b in zip(word, word[1:])}


def _clean(text: str) -> str:
    import ftfy  # noqa: PLC0415 - only tokenizing needs it

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()


class SimpleTokenizer:
    def __init__(self, bpe_path: str | None = None, context_length: int = DEFAULT_CONTEXT_LENGTH):
        import regex  # noqa: PLC0415 - only tokenizing needs it

        self.byte_encoder = bytes_to_unicode()
        merges = gzip.open(bpe_path or default_bpe()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab] + [m.replace(" ", "") for m in merges]
        special = ["<start_of_text>", "<end_of_text>"]
        vocab.extend(special)
        self.encoder = dict(zip(vocab, range(len(vocab))))
        # ranks keyed by the merge line "first second" (symbols hold no spaces): no tuples to build
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {t: t for t in special}
        self.pat = regex.compile(
            "|".join(special) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE
        )
        self.sot_token_id, self.eot_token_id = self.encoder[special[0]], self.encoder[special[1]]
        self.vocab_size = len(self.encoder)
        self.context_length = context_length

    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = _pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram.split(" ")
            new_word, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = _pairs(word)
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        tokens = []
        for token in self.pat.findall(_clean(text)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            tokens.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return tokens

    def __call__(self, texts, context_length: int | None = None) -> np.ndarray:
        """(n, context_length) int64 token ids, as open_clip's tokenizer returns (truncated)."""
        if isinstance(texts, str):
            texts = [texts]
        context_length = context_length or self.context_length
        out = np.zeros((len(texts), context_length), dtype=np.int64)
        for i, text in enumerate(texts):
            tokens = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
            if len(tokens) > context_length:
                tokens = tokens[:context_length]
                tokens[-1] = self.eot_token_id
            out[i, : len(tokens)] = tokens
        return out


def clean_texts(texts, context_length: int) -> list:
    """Texts as the CLIP text towers take them: whitespace collapsed, and a generous prefix of
    each (the tokenizer keeps context_length tokens and each token covers >= 1 visible
    character, so the prefix gives the same tokens without tokenizing megabytes). An empty
    text is an InputError."""
    from ..errors import InputError  # noqa: PLC0415 - kept lazy: loaded only on this path (a cold `import semdb` stays light)

    if isinstance(texts, str):
        texts = [texts]
    cleaned = []
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            raise InputError("empty query text: give some words to search for")
        cleaned.append(" ".join(text.split())[: 32 * context_length])
    return cleaned
