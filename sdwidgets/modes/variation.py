"""Variation seeds (A1111's subseed): the starting noise is a slerp of the seed's and the subseed's.

strength 0 is the seed's own noise (the call is left untouched), 1 the subseed's noise. The seed's
noise is drawn from the call's own generator, exactly as the pipeline would draw it, so the
generator is in the same state afterwards (ancestral samplers then add the same noise).
Text-to-image only: there the pipeline takes `latents=` as its starting noise.
"""
from __future__ import annotations

from ..errors import ParamError


def prepare(pipe, params, call: dict) -> dict:
    if not params.subseed_strength:
        return call
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    if getattr(pipe, "unet", None) is None:
        raise ParamError(f"subseed: variation seeds need a UNet model (SD 1.x/2.x, SDXL), not {type(pipe).__name__}")
    factor = pipe.vae_scale_factor
    shape = (1, pipe.unet.config.in_channels, call["height"] // factor, call["width"] // factor)
    dtype = pipe.text_encoder.dtype if getattr(pipe, "text_encoder", None) is not None else pipe.unet.dtype
    cpu = torch.device("cpu")
    noise = randn_tensor(shape, generator=call["generator"], device=cpu, dtype=dtype)
    other = randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(params.subseed), device=cpu, dtype=dtype)
    return {**call, "latents": slerp(params.subseed_strength, noise, other)}


def slerp(t: float, a, b):
    """Spherical interpolation from a (t=0) to b (t=1) of two noise tensors (flattened), in float32."""
    import torch

    if t <= 0:
        return a
    if t >= 1:
        return b
    a32, b32 = a.float().flatten(), b.float().flatten()
    cos = torch.dot(a32 / a32.norm(), b32 / b32.norm()).clamp(-1.0, 1.0)
    if cos.abs() > 0.9995:       # nearly parallel: slerp is lerp
        mixed = (1 - t) * a32 + t * b32
    else:
        omega = torch.acos(cos)
        mixed = (torch.sin((1 - t) * omega) * a32 + torch.sin(t * omega) * b32) / torch.sin(omega)
    return mixed.reshape(a.shape).to(a.dtype)
