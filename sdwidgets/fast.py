"""The fast path: fused QKV projections, channels_last, torch.compile, and LoRA strengths that
never recompile. Applied and undone in place (no reload); see options.apply.

PyTorch's SDPA attention is diffusers' default processor; fused projections swap in its fused
variant. The Session's dtype is already fp16 on CUDA; on the CPU the fast path keeps fp32.

LoRA strengths: peft's set_scale writes each strength as a Python float into every LoRA
layer's `scaling` dict, and a compiled graph specialises on such floats (one recompile per
slider position). diffusers' `enable_lora_hotswap` turns them into tensors once, but the next
`set_adapters` writes floats again; here every scaling stays one tensor per layer and adapter,
updated in place, so a strength change is a new value in the same tensor: the graph is kept.
"""
from __future__ import annotations


def denoiser_of(pipe):
    return getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)


def set_fused_qkv(denoiser, on: bool) -> bool:
    """Fuse (or unfuse) attention projections; never with LoRA adapters (fused layers would skip them).
    Returns whether the projections are fused now."""
    fused = bool(getattr(denoiser, "_sdw_fused", False))
    want = on and not getattr(denoiser, "peft_config", None) and hasattr(denoiser, "fuse_qkv_projections")
    if want and not fused:
        try:
            denoiser.fuse_qkv_projections()
        except ValueError:      # e.g. added KV projections: not fusable, run unfused
            return False
    elif fused and not want:
        denoiser.unfuse_qkv_projections()
    denoiser._sdw_fused = want
    return want


def set_compiled(module, on: bool, backend: str = "inductor") -> bool:
    """torch.compile the module's forward in place (nn.Module.compile keeps its state-dict keys, so
    LoRAs still load), or undo it; the state lives on the module, which pipelines share.
    Returns whether it was (re)compiled by this call."""
    current = getattr(module, "_sdw_compile_backend", None) \
        if getattr(module, "_compiled_call_impl", None) is not None else None
    if current == (backend if on else None):
        return False
    module._compiled_call_impl = None
    module._sdw_compile_backend = None
    if on:
        module.compile(backend=backend)
        module._sdw_compile_backend = backend
    return on


def keep_lora_scalings_as_tensors(denoiser) -> int:
    """After set_adapters: put each float scaling into that layer's one tensor for the adapter
    (in place), so compiled graphs see the same tensor with a new value. Returns layers updated."""
    import torch
    from peft.tuners.lora import LoraLayer

    updated = 0
    for module in denoiser.modules():
        if not isinstance(module, LoraLayer):
            continue
        tensors = module.__dict__.setdefault("_sdw_scaling", {})
        for name, value in list(module.scaling.items()):
            if isinstance(value, torch.Tensor):
                continue
            tensor = tensors.get(name)
            if tensor is None:
                tensor = tensors[name] = torch.tensor(float(value), device=module.weight.device)
            else:
                tensor.fill_(float(value))
            module.scaling[name] = tensor
            updated += 1
    return updated
