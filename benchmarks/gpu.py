"""SD 1.5 and SDXL speed on a GPU: bare diffusers, Session.generate, the fast path, side by side.

    python benchmarks/gpu.py [--models sd15 sdxl] [--steps 30] [--reps 3] [--out table.md]
    python benchmarks/gpu.py --tiny          # the same script at a tiny size, on the CPU (a test)

The architectures are built from their published diffusers configs (UNet, VAE, CLIP text
encoders; SD 1.5 = runwayml/stable-diffusion-v1-5, SDXL = stabilityai/stable-diffusion-xl-base-1.0)
with random weights: nothing is downloaded. The tokenizer is the embedded model's (a smaller
vocabulary than CLIP's, which changes one embedding lookup, not the speed). Each model is saved
to a temporary folder and loaded by path, as a user's model is.

One table, measured in one run: for each model, batch 1 and 4, previews on and off,
  bare      the diffusers pipeline itself, eager (its own scheduler, no callback)
  session   Session.generate with default options (logged to disk like any run)
  fast      Session(fast=True): fused QKV, channels_last, torch.compile (first run timed apart)
as seconds per image and image-steps per second over the whole call (text encoding and VAE
decode included, so a little below a denoising loop's it/s), plus peak GPU memory. Goals on one
H100/H200, SD 1.5 512x512 batch 1 with CFG: session >= 0.98x bare; fast >= 150 steps/s
(SDXL 1024x1024: >= 25). Published anchors (H100, loop it/s): SD 1.5 eager 55, compile 66,
stable-fast 104.6; SDXL eager 14.9, compile 18.5, stable-fast 21.6.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Published configs (diffusers format), trimmed to the keys that differ from the class defaults.
SD15 = {
    "unet": dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=[320, 640, 1280, 1280], cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                 up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3),
    "vae": dict(sample_size=512, in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                block_out_channels=[128, 256, 512, 512], scaling_factor=0.18215,
                down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4),
    "text_encoder": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                         max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768),
    "scheduler": dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                      skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False),
}
SDXL = {
    "unet": dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=[320, 640, 1280], cross_attention_dim=2048, attention_head_dim=[5, 10, 20],
                 transformer_layers_per_block=[1, 2, 10], use_linear_projection=True,
                 addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816,
                 down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                 up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]),
    "vae": dict(SD15["vae"], sample_size=1024, scaling_factor=0.13025, force_upcast=True),
    "text_encoder": dict(SD15["text_encoder"]),                       # CLIP ViT-L
    "text_encoder_2": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                           max_position_embeddings=77, hidden_act="gelu", projection_dim=1280),   # OpenCLIP bigG
    "scheduler": dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                      steps_offset=1, timestep_spacing="leading", interpolation_type="linear"),
}
CONFIGS = {"sd15": SD15, "sdxl": SDXL}
SIZES = {"sd15": 512, "sdxl": 1024}


def tiny(config: dict) -> dict:
    """The same architecture family at a size a CPU test can afford."""
    c = copy.deepcopy(config)
    unet = c["unet"]
    n = len(unet["block_out_channels"])
    unet.update(block_out_channels=[32] * (n - 1) + [64], sample_size=8, layers_per_block=1,
                attention_head_dim=[2] * n if isinstance(unet["attention_head_dim"], list) else 2, norm_num_groups=16)
    if "transformer_layers_per_block" in unet:
        unet.update(transformer_layers_per_block=[1] * n, cross_attention_dim=64,
                    projection_class_embeddings_input_dim=32 + 6 * 8, addition_time_embed_dim=8)
    else:
        unet["cross_attention_dim"] = 32
    c["vae"].update(block_out_channels=[16, 32], down_block_types=["DownEncoderBlock2D"] * 2,
                    up_block_types=["UpDecoderBlock2D"] * 2, layers_per_block=1, norm_num_groups=8, sample_size=16)
    for name in ("text_encoder", "text_encoder_2"):
        if name in c:
            c[name].update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           projection_dim=32)
    return c


def build(kind: str, config: dict, folder: Path, device: str, dtype) -> Path:
    """Random-weight pipeline of `kind` from `config`, saved as a diffusers folder (fp16 on a GPU)."""
    import diffusers
    import torch
    import transformers

    from sdwidgets.models import BUILTIN_MODELS

    tokenizer = transformers.CLIPTokenizer.from_pretrained(BUILTIN_MODELS["shapes"] / "tokenizer")
    torch.manual_seed(0)
    with torch.device(device):
        unet = diffusers.UNet2DConditionModel(**config["unet"])
        vae = diffusers.AutoencoderKL(**config["vae"])
        text = transformers.CLIPTextModel(transformers.CLIPTextConfig(vocab_size=len(tokenizer), **config["text_encoder"]))
        parts = dict(unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer)
        if kind == "sdxl":
            config2 = transformers.CLIPTextConfig(vocab_size=len(tokenizer), **config["text_encoder_2"])
            parts.update(text_encoder_2=transformers.CLIPTextModelWithProjection(config2), tokenizer_2=tokenizer)
    if kind == "sdxl":
        pipe = diffusers.StableDiffusionXLPipeline(scheduler=diffusers.EulerDiscreteScheduler(**config["scheduler"]),
                                                   **parts)
    else:
        pipe = diffusers.StableDiffusionPipeline(scheduler=diffusers.PNDMScheduler(**config["scheduler"]),
                                                 safety_checker=None, feature_extractor=None,
                                                 requires_safety_checker=False, **parts)
    pipe.to(dtype=dtype).save_pretrained(folder)
    return folder


def timed(fn, device: str, reps: int) -> tuple[float, float]:
    """(median seconds, peak MiB) of fn() over `reps` calls after one warm-up call."""
    import torch

    cuda = device.startswith("cuda")
    fn()
    times = []
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
    return statistics.median(times), peak


def bench_model(kind: str, folder: Path, args, rows: list) -> None:
    import torch

    import sdwidgets as sdw

    size = SIZES[kind] if not args.tiny else 64
    prompt = "a red circle on a blue background"
    s = sdw.Session(log_dir=tempfile.mkdtemp(), model=str(folder), progress=False)
    pipe = s.pipeline()
    scheduler = pipe.scheduler

    def bare(n):
        pipe.scheduler = type(scheduler).from_config(scheduler.config)
        gens = [torch.Generator("cpu").manual_seed(k) for k in range(n)]
        pipe(prompt, num_inference_steps=args.steps, guidance_scale=5.0, width=size, height=size,
             num_images_per_prompt=n, generator=gens[0] if n == 1 else gens)
        pipe.scheduler = scheduler

    def session(n, preview):
        s.generate(prompt, seed=1, steps=args.steps, guidance_scale=5.0, width=size, height=size,
                   num_images=n, preview=preview)

    def add(path, n, preview, seconds, peak, compile_s=None):
        rows.append(dict(model=kind, size=size, path=path, batch=n, previews=preview, s_per_image=seconds / n,
                         steps_per_s=args.steps * n / seconds, peak_mib=peak, compile_s=compile_s))

    for n in args.batches:
        add("bare", n, "-", *timed(lambda: bare(n), s.device, args.reps))
        for preview in ("both", "none"):
            add("session", n, preview, *timed(lambda: session(n, preview), s.device, args.reps))
    s.set_options(fast=True, compile_backend=args.compile_backend)
    for n in args.batches:
        t = time.perf_counter()
        session(n, "both")                                    # compiles for this shape
        if s.device.startswith("cuda"):
            torch.cuda.synchronize()
        first = time.perf_counter() - t
        for preview in ("both", "none"):
            add("fast", n, preview, *timed(lambda: session(n, preview), s.device, args.reps),
                compile_s=first if preview == "both" else None)
    s.unload()


def table(rows: list) -> str:
    lines = ["| model | size | path | batch | previews | s/image | steps/s | vs bare | peak MiB | first run (compile) s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    bare = {(r["model"], r["batch"]): r["steps_per_s"] for r in rows if r["path"] == "bare"}
    for r in rows:
        ratio = r["steps_per_s"] / bare[(r["model"], r["batch"])]
        compile_s = f"{r['compile_s']:.1f}" if r["compile_s"] is not None else ""
        lines.append(f"| {r['model']} | {r['size']} | {r['path']} | {r['batch']} | {r['previews']} | "
                     f"{r['s_per_image']:.3f} | {r['steps_per_s']:.1f} | {ratio:.3f} | {r['peak_mib']:.0f} | {compile_s} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", choices=sorted(CONFIGS), default=["sd15", "sdxl"])
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default 30; 2 with --tiny)")
    ap.add_argument("--reps", type=int, default=None, help="timed calls per row after a warm-up (default 3; 1 with --tiny)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; eager with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="tiny random models on the CPU (tests the script)")
    ap.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = ap.parse_args(argv)
    args.steps = args.steps or (2 if args.tiny else 30)
    args.reps = args.reps or (1 if args.tiny else 3)
    args.compile_backend = args.compile_backend or ("eager" if args.tiny else "inductor")

    import torch

    device = "cpu" if args.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py needs CUDA (use --tiny for the CPU check)", file=sys.stderr)
        return 2
    dtype = torch.float32 if args.tiny else torch.float16
    if args.tiny:
        torch.set_num_threads(1)
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.models:
            config = tiny(CONFIGS[kind]) if args.tiny else CONFIGS[kind]
            t = time.perf_counter()
            folder = build(kind, config, Path(tmp) / kind, device, dtype)
            print(f"{kind}: built and saved in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
            bench_model(kind, folder, args, rows)
    device_name = torch.cuda.get_device_name() if device == "cuda" else "CPU (tiny models)"
    text = (f"{device_name}, torch {torch.__version__}, {args.steps} steps, CFG 5, median of {args.reps}, "
            f"compile backend {args.compile_backend}, {time.perf_counter() - start:.0f} s in all\n\n{table(rows)}")
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
