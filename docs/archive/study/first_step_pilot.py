"""CPU pilot (2026-11-26): can the UNet learn to place a blob from pure noise at all? Train only the
sampler's first step (t=951, pure-noise input, x0 regression) from scratch and watch how far "on the
left" vs "on the right" moves x0, against colour words. Usage: first_step_pilot.py now|deep|ctx16|k15|addtext|film SECONDS
[LATENTS.pt] (the f=4 latents that `shapes` writes to training-work/latents.pt). Result: after
1,200 steps colour moved x0 by 0.27 / 0.31, position by 0.005 / 0.004-0.02 (current / deep UNet);
ctx16 (1,200 steps, 20% faster per step) 0.33 / 0.006, k15 (950 steps in the same 14 min) 0.23 / 0.002;
addtext 0.33 / 0.005 (1,150 steps), film 0.31 / 0.006 (1,100 steps)."""
import json, sys, time
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
from diffusers import UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer
from sdwidgets.training import architecture as A, world
from sdwidgets.training.shapes import encode_prompts, redraw_caption
from sdwidgets.training.workspace import SEED, lr_at, optimise

name, wall = sys.argv[1], float(sys.argv[2])
A.UNET_CHANNELS = (48, 96, 128, 128) if name == "deep" else (48, 96, 128)
tok = CLIPTokenizer.from_pretrained(str(Path(__file__).resolve().parents[1] / "sdwidgets/assets/shapes/tokenizer"))
if name in ("ctx16", "addtext", "film"):  # captions padded to 16 tokens instead of 77: fewer identical padding keys
    tok.model_max_length = 16
# k15: a 15x15 conv_in, so that from pure noise each position sees a different share of zero padding
unet_extra = dict(conv_in_kernel=15) if name == "k15" else {}
# addtext: the caption, attention-pooled, is added to the time embedding, so every ResNet gets a
# text-dependent per-channel bias that zero padding turns into border features; film: as scale and shift
if name in ("addtext", "film"):
    unet_extra = dict(addition_embed_type="text", addition_embed_type_num_heads=8)
if name == "film":
    unet_extra["resnet_time_scale_shift"] = "scale_shift"
d = torch.load(sys.argv[3] if len(sys.argv) > 3 else "training-work/latents.pt", weights_only=False)
scenes, lat = [world.Scene(**s) for s in d["scenes"]], d["latents"]
torch.manual_seed(SEED)
unet, te = UNet2DConditionModel(**A.unet_config(4) | unet_extra), CLIPTextModel(A.text_config(tok))
params = list(unet.parameters()) + list(te.parameters())
opt = torch.optim.AdamW(params, lr=6e-4, weight_decay=0.01)
T = 951
ab = A.training_scheduler().alphas_cumprod[T].item()
probe = torch.randn(16, 4, 16, 16, generator=torch.Generator().manual_seed(0))

def x0_of(noise, caps):
    eps = unet(noise, torch.full((len(caps),), T), encode_prompts(tok, te, caps)).sample
    return (noise - (1 - ab) ** 0.5 * eps) / ab ** 0.5

print(name, "unet params", sum(p.numel() for p in unet.parameters()), flush=True)
t0, step = time.time(), 0
while time.time() - t0 < wall:
    for g in opt.param_groups:
        g["lr"] = lr_at(step, 10_000, 6e-4, warmup=50)
    rng = np.random.default_rng(SEED * 7 + step)
    idx = rng.integers(len(scenes), size=32)
    caps = [redraw_caption(scenes[i], rng) for i in idx]
    z0 = lat[torch.from_numpy(idx)]
    loss = optimise(opt, ((x0_of(torch.randn_like(z0), caps) - z0) ** 2).mean(), params)
    step += 1
    if step % 50 == 0:
        with torch.no_grad():
            x = [x0_of(probe, [p] * 16).mean(0) for p in ("a large red circle on the left on a blue background",
                 "a large red circle on the right on a blue background", "a large green circle on the left on a blue background")]
        print(name, json.dumps(dict(step=step, s=round(time.time() - t0), loss=round(loss, 4),
              lr=round((x[0] - x[1]).abs().mean().item(), 4), rg=round((x[0] - x[2]).abs().mean().item(), 4))), flush=True)
