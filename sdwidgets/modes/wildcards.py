"""Combinations in a %%sd prompt: `a {red|green|blue} circle` is three runs, one per choice.

A brace group with a `|` in it is a dynamicprompts variant (its syntax: `{2$$a|b|c}`, weights);
other braces stay the magic's `{name}` fields and `{{ }}` stays literal. Each group is expanded
by dynamicprompts' combinatorial generator and the groups are combined, so every combination is
one run, logged with its expanded prompt (the template is kept in the row's prompt_template).
"""
from __future__ import annotations

import itertools
import re

from ..errors import ParamError

_GROUP = re.compile(r"(?<!\{)\{([^{}]*\|[^{}]*)\}(?!\})")


def has_variants(text: str) -> bool:
    return bool(_GROUP.search(text))


def expand(text: str, limit: int) -> list[str]:
    """Every combination of the variant groups in `text` (at most `limit`; more is a ParamError)."""
    from dynamicprompts.generators import CombinatorialPromptGenerator

    pieces = _GROUP.split(text)         # literal, group, literal, group, ..., literal
    generator = CombinatorialPromptGenerator()
    choices = []
    for group in pieces[1::2]:
        options = generator.generate("{" + group + "}", max_prompts=limit + 1)
        if not options:
            raise ParamError(f"prompt: the variant {{{group}}} has no choices")
        choices.append(options)
    total = 1
    for options in choices:
        total *= len(options)
    if total > limit:
        raise ParamError(f"prompt: the {{a|b}} variants make {total} prompts, more than {limit} "
                         "(SDMagic.max_runs; raise it with %config SDMagic.max_runs = N)")
    out = []
    for picked in itertools.product(*choices):
        text_ = pieces[0]
        for option, literal in zip(picked, pieces[2::2]):
            text_ += option + literal
        out.append(text_)
    return out
