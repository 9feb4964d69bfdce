"""How a latent becomes an RGB preview: the preview methods (AUTOMATIC1111/ComfyUI's names).

    tiny    a TAESD-class decoder (diffusers' AutoencoderTiny): near-final colours, full size
    approx  the linear latent -> RGB map (:class:`sdwidgets.preview.LatentRGB`), upscaled
    full    the model's own VAE (exact; as slow as the final decode, so pair it with preview_every)
    none    no step previews

The method makes the x0 frames. Noisy-latent frames always use the linear map: decoded or not,
they show mostly noise, and decoding them would double the cost of a step's previews.

Every method is behind one call, ``Previewer.to_rgb8(latents)`` ([B, H, W, 3] uint8 on the device,
at the output size or a chosen preview size), which is all :class:`~sdwidgets.preview.StepRecorder`
sees; it copies that to the host without waiting (:mod:`sdwidgets.hostcopy`).
*When* previews are taken (every k steps, which series) is the recorder's business, not this one's.

Tiny-decoder weights for a model, first found wins: one registered with
``Session.set_tiny_decoder(folder_or_hub_id)``; ``<model folder>/vae-tiny``; the family's hub
decoder (madebyollin/taesd, taesdxl, taesd3) already in the Hugging Face cache, or, when
``tiny`` is asked for explicitly, fetched from the hub once (diffusers caches it).
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import ParamError

METHODS = ("tiny", "approx", "full", "none")
TINY_FOLDER = "vae-tiny"
HUB_TINY = {"sd1": "madebyollin/taesd", "sd2": "madebyollin/taesd", "sdxl": "madebyollin/taesdxl",
            "sdxl-refiner": "madebyollin/taesdxl", "sd3": "madebyollin/taesd3"}   # by families.detect


def check_method(value) -> None:
    if value is not None and value not in METHODS:
        raise ParamError(f"preview_method must be one of {', '.join(METHODS)} (or None: the best available); "
                         f"got {value!r}")


def check_size(value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 8):
        raise ParamError(f"preview_size must be None (the output size) or an integer >= 8 (longest side), "
                         f"got {value!r}")


@dataclass
class Previewer:
    """latents [B, C, h, w] (model space) -> PIL images at `size` (width, height), by one method."""

    method: str
    convert: object              # has to_rgb8(latents) -> [B, H, W, 3] uint8
    size: tuple | None = None    # None: whatever the method gives
    noisy_convert: object = None # for noisy latents (the linear map), None: `convert`

    def to_images(self, latents) -> list:
        from .hostcopy import rgb8_to_images

        return rgb8_to_images(self.to_rgb8(latents))

    def to_rgb8(self, latents):
        """[B, H, W, 3] uint8 at `size`, left on the latents' device (StepRecorder copies it later)."""
        rgb8 = self.convert.to_rgb8(latents)
        if self.size is None or (rgb8.shape[2], rgb8.shape[1]) == tuple(self.size):
            return rgb8
        import torch
        import torch.nn.functional as F

        x = F.interpolate(rgb8.permute(0, 3, 1, 2).float(), size=(self.size[1], self.size[0]),
                          mode="bilinear", align_corners=False, antialias=True)
        return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    @functools.cached_property
    def noisy(self) -> "Previewer":
        """The previewer of the noisy-latent series (StepRecorder asks for it)."""
        if self.noisy_convert is None or self.noisy_convert is self.convert:
            return self
        return Previewer("approx", self.noisy_convert, self.size)



class TinyDecoder:
    """An AutoencoderTiny used as its pipeline would use it in place of the VAE."""

    def __init__(self, model):
        self.model = model.eval().requires_grad_(False)

    def to_rgb8(self, latents):
        import torch

        cfg = self.model.config
        z = latents.to(self.model.dtype) / cfg.scaling_factor + (cfg.get("shift_factor") or 0.0)
        with torch.no_grad():
            return _rgb8(self.model.decode(z).sample)

    def to_images(self, latents) -> list:
        from .hostcopy import rgb8_to_images

        return rgb8_to_images(self.to_rgb8(latents))


class VaeDecoder:
    """The model's own VAE: exact, and as costly as the final decode."""

    def __init__(self, vae):
        self.vae = vae

    def to_rgb8(self, latents):
        from .latents import decode

        return _rgb8(decode(self.vae, latents))

    def to_images(self, latents) -> list:
        from .hostcopy import rgb8_to_images

        return rgb8_to_images(self.to_rgb8(latents))


def _rgb8(x):
    """[B, 3, H, W] in [-1, 1] -> [B, H, W, 3] uint8 on the same device (as latents.to_images rounds)."""
    import torch

    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def preview_size(width: int, height: int, longest: int | None) -> tuple[int, int]:
    """(width, height) of the frames: the output size, or scaled so the longest side is `longest`."""
    if longest is None:
        return width, height
    scale = longest / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def tiny_compatible(tiny, pipe) -> bool:
    """Same latent channels and the same latent factor as the pipeline's VAE."""
    factor = 2 ** (len(tiny.config.num_decoder_blocks) - 1) if tiny.config.upsampling_scaling_factor == 2 else None
    return tiny.config.latent_channels == pipe.vae.config.latent_channels and factor == pipe.vae_scale_factor


def load_tiny_decoder(pipe, *, registered: str | None, folder: Path | None, family: str, explicit: bool):
    """The AutoencoderTiny for `pipe` on its device and dtype, or None (then `missing_note` says why).

    With `explicit` (the user asked for ``tiny``) the family's hub decoder may be downloaded;
    otherwise only what is on disk is used: the default never reaches for the network.
    """
    from diffusers import AutoencoderTiny

    from .quiet import quiet_diffusers

    vae = pipe.vae
    kw = {"torch_dtype": vae.dtype}
    candidates = []
    if registered is not None:
        candidates.append((registered, {}))
    if folder is not None and (folder / TINY_FOLDER / "config.json").is_file():
        candidates.append((str(folder / TINY_FOLDER), {}))
    hub = HUB_TINY.get(family)
    if hub is not None and not candidates:
        candidates.append((hub, {"local_files_only": True}))
        if explicit and not _offline():
            candidates.append((hub, {}))
    for source, extra in candidates:
        try:
            with quiet_diffusers():   # AutoencoderTiny's own config always warns about block_out_channels
                tiny = AutoencoderTiny.from_pretrained(source, **kw, **extra)
        except (OSError, ValueError) as exc:   # not cached / offline / not a diffusers folder
            if source == registered:
                raise ParamError(f"preview_method: cannot load the tiny decoder {source!r}: {exc}") from None
            continue
        if tiny_compatible(tiny, pipe):
            return TinyDecoder(tiny.to(vae.device))
        if source == registered or explicit:
            raise ParamError(f"preview_method: the tiny decoder {source!r} does not fit this model "
                             f"({tiny.config.latent_channels} latent channels, model has "
                             f"{vae.config.latent_channels} at factor {pipe.vae_scale_factor})")
    return None


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def missing_note(model_name: str, folder: Path | None, family: str) -> str:
    """Where tiny-decoder weights for this model would go (one line)."""
    where = f"{folder / TINY_FOLDER}/ (AutoencoderTiny.save_pretrained)" if folder is not None else \
        "a folder given to session.set_tiny_decoder(folder_or_hub_id)"
    hub = HUB_TINY.get(family)
    hub_hint = f", or {hub} from the hub (needs a network once)" if hub else ""
    return f"no tiny preview decoder for model {model_name!r}: put AutoencoderTiny weights in {where}{hub_hint}"


def fallback_warning(note: str) -> None:
    warnings.warn(f"{note}; previews use the linear map (approx)", stacklevel=4)
