"""``python -m sdwidgets.training.shapes evaluate``: score the shipped model folder against
issue 3's bars by reading colours and shapes off generated pixels (:mod:`.analyse`)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from . import world
from .workspace import DEFAULT_BUDGETS, Budgets, asset_dir, load_asset_pipe, log, work_dir

def eval_prompts(n: int, seed: int = 2024) -> list[world.Scene]:
    """Prompts of the grammar that name colour, shape, background and a position (size: sometimes)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        sc = world.sample_scene(rng, force_full=True)
        if sc.position is None:
            sc.position = list(world.POSITIONS)[rng.integers(5)]
        out.append(sc)
    return out


def control_cases(n: int, seed: int = 77) -> list[tuple[world.Scene, str]]:
    """Full scenes for the ControlNet test, each with its caption (no size or position words:
    the control image carries them)."""
    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng, force_full=True) for _ in range(n)]
    return [(sc, f"a {sc.fg} {sc.shape} on a {sc.bg} background") for sc in scenes]


def ring_prompts(n: int, seed: int = 88) -> list[str]:
    """'a <colour> sks on a <other colour> background': the ring LoRA's test prompts."""
    rng = np.random.default_rng(seed)
    pairs = [rng.choice(8, size=2, replace=False) for _ in range(n)]
    return [f"a {world.COLOURS[a]} {world.TRIGGER} on a {world.COLOURS[b]} background" for a, b in pairs]


def grammar_hits(scenes: list[world.Scene], images: list) -> dict[str, list[bool]]:
    """Per prompt, whether the image shows its fg, bg, shape and position (and its size, for the
    prompts that name one)."""
    from .analyse import analyse

    hits: dict[str, list[bool]] = {"fg": [], "bg": [], "shape": [], "position": [], "size": []}
    for sc, im in zip(scenes, images):
        r = analyse(im)
        hits["fg"].append(r.fg == sc.fg)
        hits["bg"].append(r.bg == sc.bg)
        hits["shape"].append(r.shape == sc.shape)
        hits["position"].append(r.at(sc.position))
        if sc.size_word:
            hits["size"].append(r.size == sc.size_word)
    return hits


def generate(pipe, prompts: list[str], seeds: list[int], batch: int = 24, **kw) -> list:
    images = []
    for i in range(0, len(prompts), batch):
        gens = [torch.Generator().manual_seed(s) for s in seeds[i:i + batch]]
        extra = {k: (v[i:i + batch] if isinstance(v, list) else v) for k, v in kw.items()}
        images += pipe(prompts[i:i + batch], generator=gens, num_inference_steps=20, **extra).images
    return images


def default_guidance() -> float:
    """The guidance scale that sdwidgets runs with unless told otherwise (``GenerationParams``):
    the model is scored as users get it. (Until 2026-11-26 the scores used diffusers' 7.5.)"""
    from ..params import GenerationParams

    return GenerationParams.guidance_scale  # the dataclass field's default


def stage_evaluate(budgets: Budgets = DEFAULT_BUDGETS, *, n_prompts: int | None = None, n_small: int | None = None,
                   guidance: float | None = None) -> dict:
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    from .analyse import analyse, blob_mask, iou

    guidance = default_guidance() if guidance is None else guidance
    n_prompts = n_prompts or budgets.eval_n
    n_small = n_small or budgets.eval_small
    t0 = time.time()
    pipe = load_asset_pipe()
    res: dict = {"guidance_scale": guidance, "steps": 20, "scheduler": type(pipe.scheduler).__name__}
    # speed: one prompt, 20 steps, CFG on
    times = []
    for i in range(6):
        t = time.time()
        pipe("a red circle on a blue background", num_inference_steps=20, guidance_scale=guidance,
             generator=torch.Generator().manual_seed(i))
        times.append(time.time() - t)
    res["seconds_per_image"] = round(float(np.median(times[1:])), 3)
    log(f"speed: {res['seconds_per_image']} s per 20-step image")

    # 1. grammar prompts
    scenes = eval_prompts(n_prompts)
    prompts = [world.caption_of(sc) for sc in scenes]
    imgs = generate(pipe, prompts, list(range(n_prompts)), guidance_scale=guidance)
    hits = grammar_hits(scenes, imgs)
    res["prompts"] = n_prompts
    res.update({k: round(float(np.mean(v)), 4) for k, v in hits.items()})
    res["size_n"] = len(hits["size"])
    _grid(imgs[:48], work_dir() / "eval_grammar.png")
    log(f"grammar: {json.dumps({k: res[k] for k in hits})}")

    # 2. negative prompt
    p = "a circle on a white background"
    seeds = list(range(1000, 1000 + n_small))
    red = []
    for neg in ("", "red"):
        ims = generate(pipe, [p] * n_small, seeds, guidance_scale=guidance, negative_prompt=[neg] * n_small)
        rs = [analyse(im) for im in ims]
        red.append(float(np.mean([r.fg == "red" and r.shape == "circle" for r in rs])))
    res["neg_red_share"] = {"without": round(red[0], 4), "with_negative_red": round(red[1], 4)}
    log(f"negative prompt: {res['neg_red_share']}")

    # 3. ControlNet
    cn_dir = asset_dir() / "controlnet-canny"
    if (cn_dir / "config.json").exists():
        from PIL import Image

        cn = ControlNetModel.from_pretrained(cn_dir, torch_dtype=torch.float32)
        cpipe = StableDiffusionControlNetPipeline.from_pipe(pipe, controlnet=cn)
        cpipe.set_progress_bar_config(disable=True)
        cases = control_cases(n_small)
        ious = []
        for i in range(0, n_small, 24):
            batch = [sc for sc, _ in cases[i:i + 24]]
            conds = [Image.fromarray(world.edges(world.render(sc))) for sc in batch]
            caps = [cap for _, cap in cases[i:i + 24]]
            ims = cpipe(caps, image=conds, num_inference_steps=20, guidance_scale=guidance,
                        generator=[torch.Generator().manual_seed(5000 + i + j) for j in range(len(batch))]).images
            ious += [iou(blob_mask(im), world.shape_mask(sc)) for im, sc in zip(ims, batch)]
            if i == 0:
                _grid([c.convert("RGB") for c in conds[:8]] + ims[:8], work_dir() / "eval_controlnet.png")
        res["controlnet_iou_median"] = round(float(np.median(ious)), 4)
        res["controlnet_iou_mean"] = round(float(np.mean(ious)), 4)
        log(f"controlnet IoU median {res['controlnet_iou_median']}")

    # 4. LoRA
    ring = asset_dir() / "loras" / "ring.safetensors"
    if ring.exists():
        pipe.load_lora_weights(str(ring), adapter_name="ring")
        lp = ring_prompts(n_small)
        shares = {}
        for w in (0.0, 0.25, 0.5, 0.75, 1.0):
            pipe.set_adapters(["ring"], [w])
            ims = generate(pipe, lp, list(range(7000, 7000 + n_small)), guidance_scale=guidance)
            shares[str(w)] = round(float(np.mean([analyse(im).shape == "ring" for im in ims])), 4)
            if w == 1.0:
                _grid(ims[:24], work_dir() / "eval_lora.png")
        res["lora_ring_share"] = shares
        log(f"lora ring share: {shares}")
        pipe.unload_lora_weights()
    res["eval_wall_s"] = round(time.time() - t0)
    (work_dir() / "eval.json").write_text(json.dumps(res, indent=1))
    print_table(res)
    return res


def _grid(images, path: Path, cols: int = 8) -> None:
    from PIL import Image

    if not images:
        return
    rows = (len(images) + cols - 1) // cols
    g = Image.new("RGB", (64 * cols, 64 * rows))
    for i, im in enumerate(images):
        g.paste(im.convert("RGB").resize((64, 64)), (64 * (i % cols), 64 * (i // cols)))
    g.save(path)


BARS = {"fg": 0.95, "bg": 0.95, "shape": 0.90, "position": 0.85}


def verdicts(res: dict) -> list[tuple[str, str, str, bool]]:
    rows = [(f"{k} accuracy ({res.get('prompts')} prompts)", f"{res[k]:.1%}", f">= {v:.0%}", res[k] >= v)
            for k, v in BARS.items() if k in res]
    if "size" in res:
        rows.append((f"size accuracy ({res['size_n']} prompts naming a size)", f"{res['size']:.1%}", "(no bar)", True))
    if "neg_red_share" in res:
        a, b = res["neg_red_share"]["without"], res["neg_red_share"]["with_negative_red"]
        rows.append(("red circles, 'a circle on a white background': no negative -> negative 'red'",
                     f"{a:.1%} -> {b:.1%}", "at least halved", b <= a / 2 and a > 0))
    if "controlnet_iou_median" in res:
        rows.append(("ControlNet canny: median IoU", f"{res['controlnet_iou_median']:.3f}", ">= 0.6",
                     res["controlnet_iou_median"] >= 0.6))
    if "lora_ring_share" in res:
        v = list(res["lora_ring_share"].values())
        ok = all(b >= a for a, b in zip(v, v[1:])) and v[0] <= 0.10 and v[-1] >= 0.80
        rows.append(("LoRA ring share at 0, .25, .5, .75, 1", ", ".join(f"{x:.0%}" for x in v),
                     "non-decreasing, <=10% at 0, >=80% at 1", ok))
    if "seconds_per_image" in res:
        rows.append(("seconds per 20-step 64x64 image, CFG on", f"{res['seconds_per_image']:.2f}", "<= 1.0",
                     res["seconds_per_image"] <= 1.0))
    return rows


def print_table(res: dict) -> None:
    rows = verdicts(res)
    w = max(len(r[0]) for r in rows)
    print(f"{'measure':<{w}}  {'value':>22}  {'bar':<40} ok")
    for name, val, bar, ok in rows:
        print(f"{name:<{w}}  {val:>22}  {bar:<40} {'yes' if ok else 'NO'}")

