"""CPU pilot (2026-11-27): restart a from-scratch run's base (the EMA weights in WORK/SRC.pt) for SECONDS
with the restart noise of 2026-11-26 (floor 0.3), with a position share SHARE and optionally another SNR
FLOOR; then print x0 l/r, x0 red/green and fg / bg / shape / position / size on 96 grammar prompts (guidance 5).

Usage: SDW_TRAIN_WORK=<a run's work folder> python study/restart_levers_pilot.py TAG SECONDS SHARE SRC [FLOOR]
Results (results/restart_levers.jsonl, from /work/scratch12's base): see study/README.md."""
import os, sys, json, time
from pathlib import Path
import numpy as np, torch
from diffusers import UNet2DConditionModel, AutoencoderKL, StableDiffusionPipeline
from transformers import CLIPTextModel, CLIPTokenizer
from sdwidgets.training import shapes, world, noise
from sdwidgets.training.architecture import default_scheduler, training_scheduler
from sdwidgets.training.evaluate import eval_prompts, grammar_hits, generate
torch.set_num_threads(2)
tag, seconds, share, src = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
W = os.environ["SDW_TRAIN_WORK"]
tok = CLIPTokenizer.from_pretrained(W + "/base/tokenizer")
unet = UNet2DConditionModel.from_pretrained(W + "/base/unet")
te = CLIPTextModel.from_pretrained(W + "/base/text_encoder")
ck = torch.load(f"{W}/{src}.pt", map_location="cpu", weights_only=False)
unet.load_state_dict(ck["ema_u"]); te.load_state_dict(ck["ema_t"])
torch.manual_seed(0)
kw = dict(noise.RESTART_NOISE, snr_floor=0.3, position_share=share)  # the pilot's baseline: 2026-11-26's restart
if len(sys.argv) > 5:
    kw["snr_floor"] = float(sys.argv[5])
info = shapes._train_base(unet, te, tok, Path(f"{W}/pilot_{tag}.pt"), seconds, shapes.RESTART_LR, 100, **kw)
unet.eval(); te.eval()
vae = AutoencoderKL.from_pretrained(W + "/vae").eval()
sched = training_scheduler()
with torch.no_grad():
    g = torch.Generator().manual_seed(5); x = torch.randn(16, 4, 16, 16, generator=g)
    t = torch.full((16,), 999); ab = sched.alphas_cumprod[999]
    def x0(p):
        e = unet(x, t, shapes.encode_prompts(tok, te, [p] * 16)).sample
        return (x - (1 - ab).sqrt() * e) / ab.sqrt()
    lr = float((x0("a red circle on the left on a blue background") - x0("a red circle on the right on a blue background")).abs().mean())
    col = float((x0("a red circle on a blue background") - x0("a green circle on a blue background")).abs().mean())
    pipe = StableDiffusionPipeline(vae=vae, unet=unet, text_encoder=te, tokenizer=tok, scheduler=default_scheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    scenes = eval_prompts(96)
    imgs = generate(pipe, [world.caption_of(s) for s in scenes], list(range(96)), guidance_scale=5.0)
h = {k: round(float(np.mean(v)), 3) for k, v in grammar_hits(scenes, imgs).items()}
line = dict(tag=tag, src=src, seconds=seconds, share=share, floor=kw["snr_floor"], steps=info["steps"], x0_lr=round(lr, 4), x0_colour=round(col, 4), **h)
print(json.dumps(line), flush=True)
