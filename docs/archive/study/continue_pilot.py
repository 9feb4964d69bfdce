"""CPU pilot (2026-11-26): continue a from-scratch base (a folder with unet/, text_encoder/, tokenizer/) for
SECONDS with a fresh AdamW and one of the noises below; score N grammar prompts before (--before) and after.

Usage: SDW_TRAIN_WORK=<work dir with latents.pt and vae/> continue_pilot.py SRC OUT SECONDS LR polish|restart|plain|plainblind|base N [--before]
Results (results/continue.jsonl): `restart` (900 s, lr 3e-4) after shape_first_pilot.py's restart took
position 60.4 -> 99% at shape 77.1%; `polish` (600 s, lr 1e-4) on the position-first 2-hour run's weights
moved shape 50 -> 58.3%, on the second restart's weights (540 s) not at all (77.1%)."""
import os, sys, json, time, shutil
os.environ.setdefault("SDW_TRAIN_WORK", "/work/scratch4/work")
import numpy as np, torch
from pathlib import Path
from diffusers import UNet2DConditionModel, AutoencoderKL, StableDiffusionPipeline
from transformers import CLIPTextModel, CLIPTokenizer
from sdwidgets.training import shapes, world, noise
from sdwidgets.training.architecture import default_scheduler
from sdwidgets.training.evaluate import eval_prompts, grammar_hits, generate

src, out, seconds, lr, variant, n_eval = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], int(sys.argv[6])
VARIANTS = {
    "polish": shapes.POLISH_NOISE,
    "restart": noise.RESTART_NOISE,
    "plain": dict(discount=0, high_noise_share=0.0, snr_floor=0.0, blind_from=0),
    "plainblind": dict(discount=0, high_noise_share=0.0, snr_floor=0.05, blind_from=900),
    "base": noise.BASE_NOISE,  # the recipe's base noise: no SNR floor
}
vae = AutoencoderKL.from_pretrained(os.environ["SDW_TRAIN_WORK"] + "/vae").eval()
tok = CLIPTokenizer.from_pretrained(f"{src}/tokenizer")

def score(unet, te, tag):
    pipe = StableDiffusionPipeline(vae=vae, unet=unet.eval(), text_encoder=te.eval(), tokenizer=tok, scheduler=default_scheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    scenes = eval_prompts(n_eval)
    with torch.no_grad():
        imgs = generate(pipe, [world.caption_of(s) for s in scenes], list(range(n_eval)), guidance_scale=7.5)
    h = {k: round(float(np.mean(v)), 3) for k, v in grammar_hits(scenes, imgs).items()}
    print(tag, h, flush=True)
    unet.train(); te.train()
    return h

unet = UNet2DConditionModel.from_pretrained(f"{src}/unet"); te = CLIPTextModel.from_pretrained(f"{src}/text_encoder")
res = {"src": src, "variant": variant, "seconds": seconds, "lr": lr}
if "--before" in sys.argv:
    res["before"] = score(unet, te, "before")
out.mkdir(parents=True, exist_ok=True)
info = shapes._train_base(unet, te, tok, out / f"{variant}.pt", seconds, lr, 50, **VARIANTS[variant])
res["steps"] = info["steps"]
res["after"] = score(unet, te, f"after {info['steps']} steps")
unet.save_pretrained(out / variant / "unet")
te.save_pretrained(out / variant / "text_encoder")
with open(out / "results.jsonl", "a") as f:
    f.write(json.dumps(res) + "\n")
