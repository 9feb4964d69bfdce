"""Hires. fix (A1111): generate at the base size, upscale by hires_scale, then an img2img pass at
hires_strength for hires_steps (default: steps) with the same seed and prompt.

Upscalers: "Lanczos" resizes the base image; "Latent" takes the base pass's latents
(output_type="latent") and resizes them bilinearly before the pass, as A1111's "Latent" does.
The img2img pipeline shares the loaded components (AutoPipelineForImage2Image.from_pipe),
so no weights load; LoRA strengths and options set on the shared denoiser carry over.
"""
from __future__ import annotations

HIRES_KEY = ("hires", ())     # LoadedModel.variants key of the img2img pipeline of the second pass


def target_size(params, width: int, height: int) -> tuple[int, int]:
    """The final size: the base size times hires_scale, down to a multiple of 8."""
    return int(width * params.hires_scale) // 8 * 8, int(height * params.hires_scale) // 8 * 8


def prepare(params, call: dict) -> dict:
    if params.hires_scale is None or params.hires_upscaler != "Latent":
        return call
    return {**call, "output_type": "latent"}      # the pass starts from the upscaled latents


def finish(session, loaded, params, call: dict, images, seed: int):
    if params.hires_scale is None:
        return images
    import torch

    from ..options import apply as apply_options

    pipe = _img2img(session, loaded)
    apply_options(pipe, session.options, session.device)
    width, height = target_size(params, call["width"], call["height"])
    if params.hires_upscaler == "Latent":
        if session._stop.is_set():        # interrupted: show the base image, decoded
            return pipe.image_processor.postprocess(_decode(pipe, images), output_type="pil")
        factor = pipe.vae_scale_factor
        image = torch.nn.functional.interpolate(images, size=(height // factor, width // factor), mode="bilinear")
    else:
        if session._stop.is_set():
            return images
        from PIL import Image

        image = [im.resize((width, height), Image.LANCZOS) for im in images]
    from ..schedulers import make_scheduler

    pipe.scheduler = make_scheduler(params.scheduler, loaded.original_scheduler)
    text = {k: call[k] for k in ("prompt", "negative_prompt", "prompt_embeds", "negative_prompt_embeds",
                                 "pooled_prompt_embeds", "negative_pooled_prompt_embeds") if k in call}
    out = pipe(image=image, strength=params.hires_strength, num_inference_steps=params.hires_steps or params.steps,
               guidance_scale=params.guidance_scale, output_type="pil",
               generator=torch.Generator("cpu").manual_seed(seed),
               callback_on_step_end=_StopCheck(session._stop), **text)
    return out.images


def _decode(pipe, latents):
    from ..latents import decode

    return decode(pipe.vae, latents)


def _img2img(session, loaded):
    if HIRES_KEY not in loaded.variants:
        import diffusers

        pipe = diffusers.AutoPipelineForImage2Image.from_pipe(loaded.pipe)
        pipe.set_progress_bar_config(disable=not session.options.progress, leave=False)
        loaded.variants[HIRES_KEY] = pipe
    return loaded.variants[HIRES_KEY]


class _StopCheck:
    """Ends the pass after the step in progress when the session is interrupted."""

    def __init__(self, stop_event):
        self.stop_event = stop_event

    def __call__(self, pipe, step, timestep, tensors):
        if self.stop_event.is_set():
            pipe._interrupt = True
        return tensors
