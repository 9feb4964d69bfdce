"""PromptSet: a fixed, named, hashed list of prompts to evaluate on.

From a list, a text file (one prompt a line), a CSV file (a `prompt` column), a JSONL file
(objects with a `prompt` string, or bare strings) or a template with slots sampled with a
seed. Its name and content hash go into the log with every row it produced, so a result
always says which prompts it was measured on.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ParamError

MAX_FILE_BYTES = 10 * 2**20      # a prompt file is text; anything bigger is a mistake (or an attack)
SUFFIXES = (".txt", ".csv", ".jsonl")


@dataclass(frozen=True)
class PromptSet:
    """Prompts in a fixed order; `values[i]` holds the slot values of prompt i (template sets)."""

    prompts: tuple
    name: str = "prompts"
    template: str | None = None
    values: tuple = field(default=(), repr=False)

    def __post_init__(self):
        from ..limits import check_limit

        prompts = tuple(self.prompts) if not isinstance(self.prompts, str) else None
        if prompts is None:
            raise ParamError("PromptSet: prompts must be a list of strings, got one string (wrap it in a list)")
        if not prompts:
            raise ParamError("PromptSet: no prompts given")
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise ParamError(f"PromptSet: prompt {i} must be a non-empty string, got {str(p)[:40]!r}")
        check_limit("sweep_values", "PromptSet: number of prompts", len(prompts))
        if not isinstance(self.name, str) or not self.name.strip():
            raise ParamError(f"PromptSet: name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "prompts", prompts)
        object.__setattr__(self, "values", tuple(self.values))

    # ---- constructors --------------------------------------------------------------------
    @classmethod
    def from_file(cls, path, name: str | None = None) -> "PromptSet":
        """Read a .txt (one prompt a line; blank lines and lines starting with # skipped), .csv
        (column `prompt`) or .jsonl file. The file is data: it is parsed, never evaluated."""
        path = Path(path).expanduser()
        if path.suffix.lower() not in SUFFIXES:
            raise ParamError(f"PromptSet: {path.name!r} must end in one of {', '.join(SUFFIXES)}")
        if not path.is_file():
            raise ParamError(f"PromptSet: no such file {str(path)!r}")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ParamError(f"PromptSet: {path.name} is larger than {MAX_FILE_BYTES // 2**20} MiB; not a prompt file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ParamError(f"PromptSet: {path.name} is not UTF-8 text") from None
        reader = {".txt": _from_text, ".csv": _from_csv, ".jsonl": _from_jsonl}[path.suffix.lower()]
        return cls(tuple(reader(text, path.name)), name=name or path.stem)

    @classmethod
    def from_template(cls, template: str, values: dict, n: int, seed: int = 0, name: str | None = None,
                      distinct: tuple = ()) -> "PromptSet":
        """`n` prompts from `template` ("a {size} {color} {shape}"), each slot drawn from its value
        list with `seed`; slots named together in a `distinct` group never take the same value
        (e.g. distinct=[("color", "background")]). Only plain {name} slots: nothing is evaluated."""
        from ..magic_parse import fill_template

        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ParamError(f"PromptSet.from_template: n must be a positive integer, got {n!r}")
        if not isinstance(values, dict) or not values:
            raise ParamError("PromptSet.from_template: values must be a dict {slot: [value, ...]}")
        for slot, options in values.items():
            if isinstance(options, str) or not list(options):
                raise ParamError(f"PromptSet.from_template: values[{slot!r}] must be a non-empty list of values")
        for group in distinct:
            unknown = [s for s in group if s not in values]
            if unknown or len(group) > min(len(values[s]) for s in group):
                raise ParamError(f"PromptSet.from_template: distinct group {tuple(group)!r} names unknown slots "
                                 f"{unknown} or has more slots than values")
        rng = random.Random(seed)
        prompts, chosen = [], []
        for _ in range(n):
            for _attempt in range(1000):
                pick = {slot: rng.choice(list(options)) for slot, options in values.items()}
                if all(len({str(pick[s]) for s in group}) == len(group) for group in distinct):
                    break
            text, _ = fill_template(template, pick, where="PromptSet.from_template")
            prompts.append(text)
            chosen.append(pick)
        return cls(tuple(prompts), name=name or "template", template=template, values=tuple(chosen))

    # ---- identity ------------------------------------------------------------------------
    @property
    def hash(self) -> str:
        """sha256 of the prompts (not the name): the same prompts always give the same hash."""
        data = json.dumps(list(self.prompts), ensure_ascii=False, separators=(",", ":")).encode()
        return hashlib.sha256(data).hexdigest()[:16]

    def tags(self, index: int) -> dict:
        """Log tags of a run made from prompt `index`."""
        tags = {"prompt_set": self.name, "prompt_set_hash": self.hash}
        if self.template is not None and self.values:
            tags.update(template=self.template, values=self.values[index])
        return tags

    def __len__(self) -> int:
        return len(self.prompts)

    def __iter__(self):
        return iter(self.prompts)

    def __getitem__(self, i):
        return self.prompts[i]

    def __repr__(self) -> str:
        return f"PromptSet({self.name!r}, {len(self)} prompts, hash {self.hash})"


def as_prompt_set(value, namespace: dict | None = None) -> PromptSet:
    """A PromptSet from a PromptSet, a list of strings, a file path, or (magic) a notebook variable name."""
    if isinstance(value, PromptSet):
        return value
    if isinstance(value, (list, tuple)):
        return PromptSet(tuple(value))
    if isinstance(value, (str, Path)):
        text = str(value)
        if namespace is not None and text.isidentifier() and text in namespace:
            return as_prompt_set(namespace[text])
        if Path(text).suffix.lower() in SUFFIXES:
            return PromptSet.from_file(text)
        where = "a notebook variable, " if namespace is not None else ""
        raise ParamError(f"prompt set {text!r}: expected {where}a PromptSet, a list of prompts or a "
                         f"{'/'.join(SUFFIXES)} file")
    raise ParamError(f"prompt set: expected a PromptSet, a list of prompts or a file path, got {type(value).__name__}")


def _from_text(text: str, where: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _from_csv(text: str, where: str) -> list[str]:
    import csv
    import io

    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "prompt" not in reader.fieldnames:
        raise ParamError(f"PromptSet: {where} needs a header row with a 'prompt' column, got {reader.fieldnames}")
    return [row["prompt"].strip() for row in reader if (row.get("prompt") or "").strip()]


def _from_jsonl(text: str, where: str) -> list[str]:
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise ParamError(f"PromptSet: {where} line {number} is not JSON") from None
        prompt = item.get("prompt") if isinstance(item, dict) else item
        if not isinstance(prompt, str):
            raise ParamError(f"PromptSet: {where} line {number} must be a string or an object with a 'prompt' "
                             "string")
        out.append(prompt.strip())
    return out
