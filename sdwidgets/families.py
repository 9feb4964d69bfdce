"""Model families (SD 1.x, SD 2.x, SDXL, SDXL refiner, SD3), detected from component configs.

Detection reads what the loaded components say about themselves (denoiser kind, latent
channels, cross-attention layout, `addition_embed_type`, text encoders, prediction type),
never the pipeline's class name: an SD 2.x model loads as `StableDiffusionPipeline` too.
One `Family` row per family then drives previews, default size, the ControlNet class and
which samplers are valid. LCM/TCD/Turbo are a speed mode on top of a family.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ParamError


@dataclass(frozen=True)
class Family:
    name: str
    latent_channels: int
    native_size: int            # pixels, full-size models
    preview: str                # key of the public latent->RGB factors in preview.py
    controlnet_class: str | None
    flow_matching: bool         # flow-matching samplers only (SD3) vs noise-prediction samplers
    cross_attention_dim: int    # full-size width of the text conditioning (for LoRA/ControlNet checks)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("sd1", 4, 512, "sd1", "ControlNetModel", False, 768),
    Family("sd2", 4, 768, "sd1", "ControlNetModel", False, 1024),
    Family("sdxl", 4, 1024, "sdxl", "ControlNetModel", False, 2048),
    Family("sdxl-refiner", 4, 1024, "sdxl", None, False, 1280),
    Family("sd3", 16, 1024, "sd3", "SD3ControlNetModel", True, 4096),
)}
# Few steps, little or no guidance: what these distillations were trained for.
SPEED_DEFAULTS = {"lcm": (4, 1.0), "tcd": (4, 1.0), "turbo": (1, 0.0)}


def _get(config, key, default=None):
    value = config.get(key, default) if hasattr(config, "get") else getattr(config, key, default)
    return default if value is None else value


def detect_configs(denoiser: dict, vae: dict | None = None, scheduler: dict | None = None,
                   has_text_encoder: bool = True, text_encoder: dict | None = None) -> str:
    """Family name from component configs (dicts as in the model folder's config.json files)."""
    latent = _get(vae or {}, "latent_channels", _get(denoiser, "in_channels", 4))
    if "joint_attention_dim" in denoiser or "pooled_projection_dim" in denoiser:   # MMDiT transformer
        if latent != 16 and vae is not None and latent != _get(denoiser, "in_channels"):
            raise ParamError(f"model: a {latent}-channel VAE with an sd3 transformer ({_get(denoiser, 'in_channels')} channels)")
        return "sd3"
    if _get(denoiser, "addition_embed_type") == "text_time":
        # the refiner has only the big OpenCLIP encoder and conditions on an aesthetic score
        return "sdxl" if has_text_encoder else "sdxl-refiner"
    prediction = _get(scheduler or {}, "prediction_type", "epsilon")
    cross = _get(denoiser, "cross_attention_dim", 768)
    # SD 2.x: OpenCLIP ViT-H (1024 wide, plain gelu) and linear projections in the transformer blocks
    if cross == 1024 or _get(denoiser, "use_linear_projection", False) or prediction == "v_prediction" \
            or _get(text_encoder or {}, "hidden_act") == "gelu":
        return "sd2"
    return "sd1"


def detect(pipe) -> str:
    """Family name of a loaded diffusers pipeline."""
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    text_encoder = getattr(pipe, "text_encoder", None)
    return detect_configs(dict(denoiser.config), dict(pipe.vae.config), dict(pipe.scheduler.config),
                          has_text_encoder=text_encoder is not None,
                          text_encoder=text_encoder.config.to_dict() if text_encoder is not None else None)


def speed_mode(scheduler_name: str, lora_names=(), model_name: str = "") -> str | None:
    """lcm / tcd / turbo from the scheduler class, an LCM/TCD LoRA, or a Turbo model's name."""
    names = " ".join([scheduler_name, *lora_names]).lower()
    for mode in ("lcm", "tcd"):
        if mode in names:
            return mode
    # Turbo models ship an ordinary Euler config: their name is all there is to go by
    return "turbo" if "turbo" in model_name.lower() else None


def label(family: str, mode: str | None) -> str:
    """The log's `family` value: 'sdxl', or 'sd1+lcm' for a speed mode."""
    return f"{family}+{mode}" if mode else family


def check_sampler(family: str, sampler: str | None) -> None:
    """ParamError before any denoising if `sampler` cannot run on `family`."""
    from .schedulers import SAMPLERS, check_sampler as canonical

    if sampler is None:
        return
    name = canonical(sampler)
    flow = FAMILIES[family].flow_matching
    if SAMPLERS[name][0].startswith("FlowMatch") != flow:
        usable = [n for n, (c, _) in SAMPLERS.items() if c.startswith("FlowMatch") == flow]
        raise ParamError(f"scheduler: {name!r} does not work with {family} models; choose one of: {', '.join(usable)}")


def controlnet_family(config: dict, cls_name: str = "ControlNetModel") -> str:
    """Which family a ControlNet was trained for, from its config."""
    if cls_name.startswith("SD3") or "joint_attention_dim" in config:
        return "sd3"
    return detect_configs(config)


def check_controlnet(model_family: str, config: dict, cls_name: str, source: str, denoiser_config: dict) -> None:
    """ParamError naming both families if a ControlNet does not fit the model."""
    net_family = controlnet_family(config, cls_name)
    wanted = FAMILIES[model_family].controlnet_class
    fits = wanted is not None and net_family == model_family and \
        _get(config, "cross_attention_dim", _get(config, "joint_attention_dim")) == \
        _get(denoiser_config, "cross_attention_dim", _get(denoiser_config, "joint_attention_dim"))
    if not fits:
        raise ParamError(f"controls: ControlNet {source!r} is for {net_family} models; this model is {model_family}"
                         + ("" if wanted else f" ({model_family} has no ControlNets)"))


def lora_cross_attention_dim(keys_and_shapes: dict) -> int | None:
    """Width of the text conditioning a LoRA was trained against (from a cross-attention to_k 'down' matrix)."""
    for key, shape in keys_and_shapes.items():
        k = key.lower()
        is_down = "lora_a" in k or "lora_down" in k or "down.weight" in k
        if is_down and ("attn2" in k and "to_k" in k) and len(shape) == 2:
            return int(shape[1])
    return None


def lora_family(keys_and_shapes: dict) -> str | None:
    """The family a LoRA file was made for, from its tensor names and shapes (None: cannot tell)."""
    keys = [k.lower() for k in keys_and_shapes]
    if any(k.startswith(("transformer.", "lora_transformer_")) or "joint_blocks" in k for k in keys):
        return "sd3"
    width = lora_cross_attention_dim(keys_and_shapes)
    for family in FAMILIES.values():
        if family.cross_attention_dim == width:
            return family.name
    # SDXL: a second text encoder, or several transformer layers per block (SD 1/2 have one)
    if any("text_encoder_2" in k or "lora_te2_" in k or "transformer_blocks.1." in k or "transformer_blocks_1_" in k
           for k in keys):
        return "sdxl"
    return None


def check_lora(model_family: str, model_cross_dim: int | None, lora_name: str, keys_and_shapes: dict) -> None:
    """ParamError naming both families if a LoRA was made for another family."""
    found = lora_family(keys_and_shapes)
    if found is None and model_family == "sd3" and any("unet" in k.lower() for k in keys_and_shapes):
        found = "UNet (sd1/sd2/sdxl)"
    width = lora_cross_attention_dim(keys_and_shapes)
    sdxl_pair = {found, model_family} <= {"sdxl", "sdxl-refiner"}
    wrong_width = width is not None and model_cross_dim is not None and width != model_cross_dim
    if (found is not None and found != model_family and not sdxl_pair) or wrong_width:
        described = f"{found} models" if found else f"models with {width}-wide text conditioning"
        raise ParamError(f"loras: {lora_name!r} is for {described}; this model is {model_family}"
                         + (f" ({width}- vs {model_cross_dim}-wide text conditioning)" if wrong_width else ""))
