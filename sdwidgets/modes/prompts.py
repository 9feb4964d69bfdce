"""Prompt syntax: plain (what diffusers does, with a warning when CLIP cuts the prompt), or
weighted and long prompts through compel.

    plain   the pipeline encodes the text itself; CLIP reads 77 tokens and drops the rest, so a
            TruncatedPromptWarning names the dropped words (also kept in run.warnings)
    a1111   AUTOMATIC1111's syntax: (word:1.3), (word) = x1.1, [word] = /1.1, \\( for a literal
            bracket, BREAK starts a new 75-token chunk; prompts longer than one chunk are encoded
            in chunks (nothing is cut)
    compel  compel's own syntax: (word)1.3, word++, .blend(), .and()

Weighting and chunking are compel's (SD 1.x/2.x: one CLIP; SDXL: both, with the pooled
embedding); this module only turns A1111 syntax into compel's fragments and hands the
embeddings to the pipeline as prompt_embeds.
"""
from __future__ import annotations

import re
import warnings

from ..errors import ParamError

# A1111's attention grammar: escapes, brackets, ":weight)" closers, plain text
_TOKENS = re.compile(r"\\[\\()\[\]]|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()\[\]:]+|:")
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
_PLUS, _MINUS = 1.1, 1 / 1.1


class TruncatedPromptWarning(UserWarning):
    """The text encoder reads a limited number of tokens; the rest of the prompt was dropped."""


def parse_a1111(text: str) -> list[tuple[str, float]]:
    """A1111 attention syntax -> [(text, weight)] with neighbours of equal weight merged."""
    parts: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for part in parts[start:]:
            part[1] *= factor

    for match in _TOKENS.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\") and len(token) == 2:
            parts.append([token[1], 1.0])
        elif token == "(":
            round_open.append(len(parts))
        elif token == "[":
            square_open.append(len(parts))
        elif weight is not None and round_open and _is_number(weight):
            scale(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            scale(round_open.pop(), _PLUS)
        elif token == "]" and square_open:
            scale(square_open.pop(), _MINUS)
        else:
            parts.append([token, 1.0])
    for start in round_open:           # unclosed brackets still weigh, as in A1111
        scale(start, _PLUS)
    for start in square_open:
        scale(start, _MINUS)
    merged: list[list] = []
    for text_, weight in parts:
        if merged and merged[-1][1] == weight:
            merged[-1][0] += text_
        else:
            merged.append([text_, weight])
    return [(t, w) for t, w in merged if t]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# ---- plain: the truncation warning --------------------------------------------------------------

def dropped_words(tokenizer, text: str) -> str:
    """The part of `text` the tokenizer's model never sees ('' when it fits)."""
    if not text or tokenizer is None:
        return ""
    ids = tokenizer(text, truncation=False, add_special_tokens=False, verbose=False).input_ids
    room = tokenizer.model_max_length - 2          # BOS and EOS take two of the 77
    return tokenizer.decode(ids[room:]).strip() if len(ids) > room else ""


def warn_truncation(pipe, params, run) -> None:
    tokenizer = getattr(pipe, "tokenizer", None) or getattr(pipe, "tokenizer_2", None)
    for name in ("prompt", "negative_prompt"):
        dropped = dropped_words(tokenizer, getattr(params, name))
        if dropped:
            message = (f"{name} is longer than the text encoder's {tokenizer.model_max_length} tokens; "
                       f"dropped: {dropped!r} (prompt_syntax='a1111' or 'compel' encodes long prompts in chunks)")
            if message not in run.warnings:
                run.warnings.append(message)
                warnings.warn(message, TruncatedPromptWarning, stacklevel=5)


# ---- a1111 / compel: embeddings ------------------------------------------------------------------

def _conjunctions(text: str, syntax: str) -> list:
    """compel Conjunctions, one per 75-token segment the user asked for (BREAK in a1111 syntax)."""
    from compel import Compel
    from compel.prompt_parser import Conjunction, FlattenedPrompt, Fragment

    if syntax == "compel":
        return [Compel.parse_prompt_string(text)]
    segments = _BREAK.split(text) if "BREAK" in text else [text]
    return [Conjunction([FlattenedPrompt([Fragment(t, w) for t, w in parse_a1111(s)] or [Fragment("", 1.0)])])
            for s in segments]


def _encode(compel, conjunctions):
    """One conditioning tensor: the segments' chunks concatenated along the token axis."""
    import torch

    return torch.cat([compel.build_conditioning_tensor_for_conjunction(c)[0] for c in conjunctions], dim=1)


def _pad(compel, tensor, length: int):
    """Extend with the empty prompt's conditioning to `length` tokens (what compel pads with)."""
    import torch

    if tensor.shape[1] >= length:
        return tensor
    empty = _encode(compel, _conjunctions("", "compel"))
    repeats = -(-(length - tensor.shape[1]) // empty.shape[1])
    return torch.cat([tensor, empty.repeat(1, repeats, 1)], dim=1)[:, :length]


def _plain_text(text: str, syntax: str) -> str:
    """The words without syntax (for SDXL's pooled embedding, which reads one 77-token text)."""
    if syntax == "compel":
        return text
    return " ".join(t for s in _BREAK.split(text) for t, _ in parse_a1111(s))


def embeddings(pipe, prompt: str, negative: str, syntax: str) -> dict:
    """prompt_embeds / negative_prompt_embeds (+ pooled for SDXL) for the pipeline call."""
    import torch

    with torch.no_grad():
        return _embeddings(pipe, prompt, negative, syntax)


def _embeddings(pipe, prompt: str, negative: str, syntax: str) -> dict:
    from compel import Compel, ReturnedEmbeddingsType

    family = "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd"
    if family == "sd" and getattr(pipe, "text_encoder", None) is None or \
            type(pipe).__name__.startswith(("StableDiffusion3", "Flux")):
        raise ParamError(f"prompt_syntax={syntax!r} needs an SD 1.x/2.x or SDXL model (CLIP text encoders); "
                         "use prompt_syntax='plain' with this one")
    pos_parts, neg_parts = _conjunctions(prompt, syntax), _conjunctions(negative, syntax)
    if family == "sd":
        compel = Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, truncate_long_prompts=False)
        pos, neg = _encode(compel, pos_parts), _encode(compel, neg_parts)
        length = max(pos.shape[1], neg.shape[1])
        return {"prompt_embeds": _pad(compel, pos, length), "negative_prompt_embeds": _pad(compel, neg, length)}
    import torch

    kind = ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
    encoders = [Compel(tokenizer=t, text_encoder=e, truncate_long_prompts=False, returned_embeddings_type=kind,
                       requires_pooled=pooled)
                for t, e, pooled in ((pipe.tokenizer, pipe.text_encoder, False),
                                     (pipe.tokenizer_2, pipe.text_encoder_2, True))]
    pairs = [(_encode(c, pos_parts), _encode(c, neg_parts)) for c in encoders]
    length = max(t.shape[1] for pair in pairs for t in pair)
    pos = torch.cat([_pad(c, p, length) for c, (p, _) in zip(encoders, pairs)], dim=-1)
    neg = torch.cat([_pad(c, n, length) for c, (_, n) in zip(encoders, pairs)], dim=-1)
    provider = encoders[1].conditioning_provider
    pooled = provider.get_pooled_embeddings([_plain_text(prompt, syntax)])
    neg_pooled = provider.get_pooled_embeddings([_plain_text(negative, syntax)])
    if not negative and getattr(pipe.config, "force_zeros_for_empty_prompt", False):
        neg, neg_pooled = torch.zeros_like(pos), torch.zeros_like(pooled)     # what SDXL pipelines do
    return {"prompt_embeds": pos, "negative_prompt_embeds": neg,
            "pooled_prompt_embeds": pooled, "negative_pooled_prompt_embeds": neg_pooled}


def prepare(pipe, params, call: dict, run) -> dict:
    syntax = params.prompt_syntax or "plain"
    if syntax == "plain":
        warn_truncation(pipe, params, run)
        return call
    embeds = embeddings(pipe, params.prompt, params.negative_prompt, syntax)
    call = {k: v for k, v in call.items() if k not in ("prompt", "negative_prompt")}
    return {**call, **embeds}
