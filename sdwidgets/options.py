"""Memory and speed options of a Session, applied idempotently to its pipelines."""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass

from .errors import ParamError

OFFLOAD_MODES = (None, "model", "sequential")


@dataclass
class Options:
    attention_slicing: bool = False
    vae_slicing: bool = False
    vae_tiling: bool = False
    cpu_offload: str | None = None      # None | "model" | "sequential"
    xformers: bool = False
    compile: bool = False               # torch.compile the denoiser (opt-in: slow first run)
    channels_last: bool = False
    fast: bool = False                  # the fast path: fused QKV, channels_last, compile, LoRA without recompiles
    compile_backend: str = "inductor"   # torch.compile backend ("eager" traces without generating code)
    safety_checker: bool = True         # keep the model's checker as diffusers loads it
    progress: bool = True               # tqdm progress bars

    def update(self, **changes) -> "Options":
        names = [f.name for f in dataclasses.fields(self)]
        for key, value in changes.items():
            if key not in names:
                raise ParamError(f"unknown session option {key!r}; options: {', '.join(names)}")
            if key == "cpu_offload":
                if value not in OFFLOAD_MODES:
                    raise ParamError(f"cpu_offload must be one of {OFFLOAD_MODES}, got {value!r}")
            elif key == "compile_backend":
                if not isinstance(value, str) or not value:
                    raise ParamError(f"compile_backend must be a torch.compile backend name like 'inductor', got {value!r}")
            elif not isinstance(value, bool):
                raise ParamError(f"{key} must be True or False, got {value!r}")
            elif key == "xformers" and value and importlib.util.find_spec("xformers") is None:
                raise ParamError("xformers=True needs the xformers package, which is not installed; "
                                 "PyTorch's SDPA attention is used by default")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def oom_advice(self, width: int, height: int, num_images: int) -> str:
        """Which options would help after an out-of-memory error (those not on yet)."""
        tips = []
        if not self.attention_slicing:
            tips.append("attention_slicing=True")
        if not self.vae_slicing and num_images > 1:
            tips.append("vae_slicing=True")
        if not self.vae_tiling and width * height > 768 * 768:
            tips.append("vae_tiling=True")
        if self.cpu_offload is None:
            tips.append('cpu_offload="model"')
        elif self.cpu_offload == "model":
            tips.append('cpu_offload="sequential"')
        if num_images > 1:
            tips.append("fewer images per run")
        tips.append("a smaller size")
        return "try session.set_options(" + ", ".join(t for t in tips if "=" in t) + ") or " + \
            ", ".join(t for t in tips if "=" not in t)


def apply(pipe, options: Options, device: str) -> None:
    """Bring `pipe` in line with `options`. Safe to call any number of times."""
    applied = pipe.__dict__.setdefault("_sdw_applied", {})

    def changed(key, value) -> bool:
        if applied.get(key) == value:
            return False
        applied[key] = value
        return True

    if changed("attention_slicing", options.attention_slicing):
        pipe.enable_attention_slicing() if options.attention_slicing else pipe.disable_attention_slicing()
    vae = getattr(pipe, "vae", None)
    if vae is not None:   # diffusers moved slicing/tiling onto the VAE itself
        if changed("vae_slicing", options.vae_slicing):
            vae.enable_slicing() if options.vae_slicing else vae.disable_slicing()
        if changed("vae_tiling", options.vae_tiling):
            vae.enable_tiling() if options.vae_tiling else vae.disable_tiling()
    was_xformers = applied.get("xformers", False)
    if changed("xformers", options.xformers):
        if options.xformers:
            try:
                pipe.enable_xformers_memory_efficient_attention()
            except (ImportError, ModuleNotFoundError, ValueError) as exc:
                applied["xformers"] = False
                raise ParamError(f"xformers is not usable here ({exc}); PyTorch's SDPA attention is used by default") from None
        elif was_xformers:   # only undo our own: disabling resets SD3's joint attention processors
            pipe.disable_xformers_memory_efficient_attention()
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    channels_last = options.channels_last or options.fast
    if changed("channels_last", channels_last) and denoiser is not None:
        import torch

        denoiser.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if changed("cpu_offload", options.cpu_offload):
        pipe.remove_all_hooks()
        if options.cpu_offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        elif options.cpu_offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
        else:
            pipe.to(device)
    if denoiser is not None:
        from . import fast

        fast.set_fused_qkv(denoiser, options.fast)      # re-checked each run: unfused once a LoRA loads
        if options.fast and getattr(denoiser, "peft_config", None):
            fast.keep_lora_scalings_as_tensors(denoiser)
        fast.set_compiled(denoiser, options.compile or options.fast, options.compile_backend)
