"""Score the EMA weights inside stage checkpoints of a run: fg / bg / shape / position on N grammar prompts,
guidance 5, 20 Euler steps, with the run's VAE and tokenizer.

Usage: python study/checkpoint_scores.py <work folder> N STAGE [STAGE ...]   (STAGE: base, restart, restart2, sharpen)"""
import os, sys, json
import numpy as np, torch
from diffusers import UNet2DConditionModel, AutoencoderKL, StableDiffusionPipeline
from transformers import CLIPTextModel, CLIPTokenizer
from sdwidgets.training import world
from sdwidgets.training.architecture import default_scheduler
from sdwidgets.training.evaluate import eval_prompts, grammar_hits, generate
torch.set_num_threads(2)
work, n = sys.argv[1], int(sys.argv[2])
stages = sys.argv[3:]
vae = AutoencoderKL.from_pretrained(work + "/vae").eval()
tok = CLIPTokenizer.from_pretrained(work + "/base/tokenizer")
unet = UNet2DConditionModel.from_pretrained(work + "/base/unet").eval()
te = CLIPTextModel.from_pretrained(work + "/base/text_encoder").eval()
scenes = eval_prompts(n)
for st in stages:
    ck = torch.load(f"{work}/{st}.pt", map_location="cpu", weights_only=False)
    unet.load_state_dict(ck["ema_u"]); te.load_state_dict(ck["ema_t"])
    pipe = StableDiffusionPipeline(vae=vae, unet=unet, text_encoder=te, tokenizer=tok, scheduler=default_scheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        imgs = generate(pipe, [world.caption_of(s) for s in scenes], list(range(n)), guidance_scale=5.0)
    h = {k: round(float(np.mean(v)), 3) for k, v in grammar_hits(scenes, imgs).items()}
    print(work, st, ck.get("state", {}).get("step"), h, flush=True)
