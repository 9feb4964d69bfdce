"""CPU pilot (2026-11-26): shape first, then position. A plain base (white noise, uniform t, no SNR floor;
blind from t=900) then the recipe's restart (SNR floor 0.3, pyramid 0.8, half t >= 500), captions padded
to 24 tokens; 200 grammar prompts scored after each.

Usage: SDW_TRAIN_WORK=<dir with latents.pt and vae/ of a from-scratch run> shape_first_pilot.py BASE_S RESTART_S
Result (2,000 + 1,600 s on the 2-core CPU, results/shape_first.jsonl): after the base (2,502 steps)
fg / bg / shape / position 97 / 100 / 81 / 23%, x0 l/r 0.009; after the restart (1,885 steps)
95.5 / 100 / 78.5 / 60%, x0 l/r 0.24. The position-first noise had left 46.7% shape, 38.8% position."""
import os, sys, json, time
import numpy as np, torch
torch.set_num_threads(2)
from pathlib import Path
from diffusers import UNet2DConditionModel, AutoencoderKL, StableDiffusionPipeline
from transformers import CLIPTextModel, CLIPTokenizer
from sdwidgets.training import shapes, world, noise
from sdwidgets.training.architecture import default_scheduler, unet_config, text_config, training_scheduler
from sdwidgets.training.evaluate import eval_prompts, grammar_hits, generate
from sdwidgets.training.tokenizer import write_tokenizer
W = Path(os.environ["SDW_TRAIN_WORK"]); out = W / "base"
BASE_S, RESTART_S = float(sys.argv[1]), float(sys.argv[2])
WHITE = dict(discount=0, high_noise_share=0.0, snr_floor=0.0, blind_from=900)
vae = AutoencoderKL.from_pretrained(W / "vae").eval()
tok = write_tokenizer(out / "tokenizer")  # pads to 24 tokens
res = open(W / "shape_first.jsonl", "a")

@torch.no_grad()
def x0_lr(unet, te):
    ab = training_scheduler().alphas_cumprod[951].item()
    nz = torch.randn(16, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    x0 = []
    for p in ("a large red circle on the left on a blue background", "a large red circle on the right on a blue background"):
        eps = unet(nz, torch.full((16,), 951), shapes.encode_prompts(tok, te, [p] * 16)).sample
        x0.append(((nz - (1 - ab) ** 0.5 * eps) / ab ** 0.5).mean(0))
    return round((x0[0] - x0[1]).abs().mean().item(), 4)

def score(unet, te, tag, info):
    unet.eval(); te.eval()
    pipe = StableDiffusionPipeline(vae=vae, unet=unet, text_encoder=te, tokenizer=tok, scheduler=default_scheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    scenes = eval_prompts(200)
    with torch.no_grad():
        imgs = generate(pipe, [world.caption_of(s) for s in scenes], list(range(200)), guidance_scale=7.5)
    h = {k: round(float(np.mean(v)), 3) for k, v in grammar_hits(scenes, imgs).items()}
    row = dict(stage=tag, steps=info["steps"], train_s=info["train_s"], x0_lr=x0_lr(unet, te), **h)
    print(row, flush=True); res.write(json.dumps(row) + "\n"); res.flush()
    unet.train(); te.train()

torch.manual_seed(shapes.SEED)
unet = UNet2DConditionModel(**unet_config(4)); te = CLIPTextModel(text_config(tok))
info = shapes._train_base(unet, te, tok, W / "base.pt", BASE_S, 6e-4, 300, **WHITE)
unet.save_pretrained(out / "unet"); te.save_pretrained(out / "text_encoder")
score(unet, te, "white_base", info)
info = shapes._train_base(unet, te, tok, W / "restart.pt", RESTART_S, shapes.RESTART_LR, 100, **noise.RESTART_NOISE)
unet.save_pretrained(out / "unet_restart"); te.save_pretrained(out / "text_encoder_restart")
score(unet, te, "restart", info)
