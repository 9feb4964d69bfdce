"""Generation parameters from images made by other tools (and ours), read as untrusted data.

    ours           the `sdwidgets` JSON chunk (every parameter, init/control images from inputs/)
    AUTOMATIC1111  `parameters` PNG text, or EXIF UserComment in JPEG/WebP (Forge, SD.Next alike)
    others         ComfyUI, InvokeAI, NovelAI, Fooocus and "stealth" alpha-channel info, through
                   the sd-parsers package (https://github.com/d3x-at/sd-parsers)

What maps onto GenerationParams is kept; what does not is named in a ParamWarning, never
guessed. A damaged file is one ParamError line, never a PIL or json traceback.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

from .errors import ParamError, ParamWarning

# Sampler names other tools write (ComfyUI/Fooocus/k-diffusion, InvokeAI, NovelAI "k_" names) -> ours.
_SAMPLERS = {
    "euler": "Euler", "euler_ancestral": "Euler a", "euler_a": "Euler a", "heun": "Heun", "lms": "LMS",
    "ddim": "DDIM", "ddpm": "DDPM", "pndm": "PNDM", "plms": "PLMS", "uni_pc": "UniPC", "unipc": "UniPC",
    "uni_pc_bh2": "UniPC", "deis": "DEIS", "lcm": "LCM", "tcd": "TCD", "dpm_2": "DPM2", "dpm_2_ancestral": "DPM2 a",
    "dpm_2_a": "DPM2 a", "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_sde": "DPM++ 2M SDE", "dpmpp_sde": "DPM++ SDE",
    "kdpm_2": "DPM2", "kdpm_2_a": "DPM2 a", "dpmpp_2s_ancestral": None, "dpmpp_3m_sde": None,
}


def warn(message: str) -> None:
    warnings.warn(message, ParamWarning, stacklevel=3)


def read_params(path, params_class):
    """GenerationParams from an image file; ParamError naming the file when nothing can be read."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path).expanduser()
    if not path.is_file():
        raise ParamError(f"{path}: no such image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                text = {str(k): v for k, v in {**im.info, **getattr(im, "text", {})}.items() if isinstance(v, str)}
                user_comment = _user_comment(im)
                if _OURS in text:
                    return _ours(text[_OURS], path, params_class)
                a1111 = text.get("parameters") or user_comment
                if a1111 and not _is_json(a1111):
                    return params_class.from_infotext(a1111)
                return _other_tool(im, path, params_class)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ParamError(f"{path}: the image is too large to decode safely (a decompression bomb?)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, ValueError) as exc:
        if isinstance(exc, ParamError):
            raise
        raise ParamError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None


_OURS = "sdwidgets"


def _ours(chunk: str, path: Path, params_class):
    from .images import stored_inputs

    try:
        data = json.loads(chunk)["params"]
        if not isinstance(data, dict):
            raise TypeError("params is not an object")
        return params_class.from_dict(data, stored_inputs(path.parent.parent / "inputs"))
    except ParamError as exc:
        raise ParamError(f"{path}: {exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ParamError(f"{path}: its sdwidgets metadata is damaged ({type(exc).__name__}: {exc})") from None


def _user_comment(im) -> str | None:
    """EXIF UserComment (A1111 writes its parameters there in JPEG and WebP)."""
    if im.format not in ("JPEG", "WEBP", "MPO"):
        return None
    try:
        from sd_parsers.extractors._get_exif_value import get_exif_value

        return get_exif_value(im, "UserComment").strip("\0") or None
    except (KeyError, ValueError, UnicodeDecodeError, SyntaxError, OSError):
        return None


def _is_json(text: str) -> bool:
    try:
        return isinstance(json.loads(text), (dict, list))
    except ValueError:
        return False


def _other_tool(im, path: Path, params_class):
    from sd_parsers import ParserManager
    from sd_parsers.extractors import Eagerness

    try:
        info = ParserManager().parse(im, eagerness=Eagerness.EAGER if im.mode == "RGBA" else Eagerness.DEFAULT)
    except Exception as exc:  # noqa: BLE001 - a parser failing on a stranger's file is "unreadable"
        raise ParamError(f"{path}: its generation metadata could not be read ({type(exc).__name__}: {exc})") from None
    if info is None:
        raise ParamError(f"{path}: no generation parameters found (none of: sdwidgets, AUTOMATIC1111/Forge, "
                         "ComfyUI, InvokeAI, NovelAI, Fooocus)")
    raw = info.raw_parameters.get("parameters") if isinstance(info.raw_parameters, dict) else None
    if info.generator.name == "AUTOMATIC1111" and isinstance(raw, str):
        return params_class.from_infotext(raw)     # e.g. stealth info: our A1111 parser knows quoting
    return params_class(**settings_from_prompt_info(info, path))


def settings_from_prompt_info(info, path) -> dict:
    """GenerationParams keyword arguments from an sd-parsers PromptInfo (warnings for what is left out)."""
    tool = info.generator.name
    if not info.samplers:
        raise ParamError(f"{path}: {tool} metadata without a sampler; nothing to import")
    sampler = info.samplers[0]
    if len(info.samplers) > 1:
        warn(f"{path}: {tool} used {len(info.samplers)} samplers (e.g. a hires pass); imported the first")
    parameters = {**info.metadata, **sampler.parameters} if isinstance(info.metadata, dict) else dict(sampler.parameters)
    out = {"prompt": ", ".join(p.value for p in sampler.prompts if isinstance(p.value, str)),
           "negative_prompt": ", ".join(p.value for p in sampler.negative_prompts if isinstance(p.value, str))}
    for key, target, convert in (("seed", "seed", int), ("steps", "steps", int), ("cfg_scale", "guidance_scale", float)):
        if parameters.get(key) is not None:
            try:
                out[target] = convert(str(parameters[key]).strip())
            except ValueError:
                warn(f"{path}: {tool} {key} {str(parameters[key])[:40]!r} is not a number; left out")
    scheduler = map_sampler(sampler.name, parameters.get("scheduler"), tool, path)
    if scheduler:
        out["scheduler"] = scheduler
    if sampler.model is not None:
        warn(f"{path}: {tool} model {str(sampler.model)!r} is not carried over (a file on another machine); "
             "the session's model is used")
    size = _size(info, parameters)
    if size:
        out["width"], out["height"] = (nearest_multiple_of_8(v, n, path) for v, n in zip(size, ("width", "height")))
    return out


def map_sampler(name, schedule, tool: str, path) -> str | None:
    """Our A1111-style sampler name for another tool's sampler + schedule; None (and a warning) if unmapped."""
    from .schedulers import SAMPLER_NAMES

    if not isinstance(name, str):
        return None
    if name in SAMPLER_NAMES:
        karras = str(schedule or "").lower() == "karras" and f"{name} Karras" in SAMPLER_NAMES
        return f"{name} Karras" if karras else name
    key = name.lower().strip().removeprefix("k_").removesuffix("_gpu")
    karras = str(schedule or "").lower() == "karras" or key.endswith(("_k", "_karras"))
    key = re.sub(r"_(k|karras)$", "", key)
    ours = _SAMPLERS.get(key)
    if ours and karras and f"{ours} Karras" in SAMPLER_NAMES:
        ours = f"{ours} Karras"
    elif ours and karras:
        warn(f"{path}: {tool} sampler {name!r} with the Karras schedule has no Karras variant here; using {ours}")
    if ours is None:
        warn(f"{path}: {tool} sampler {name!r} has no equivalent here; the model's default sampler is used")
        return None
    if schedule and str(schedule).lower() not in ("karras", "normal", "simple", "automatic", "default"):
        warn(f"{path}: {tool} schedule {schedule!r} is not mapped; {ours} uses its default schedule")
    return ours


def _size(info, parameters: dict):
    """(width, height) wherever the tool keeps it, or None."""
    try:
        if "width" in parameters and "height" in parameters:
            return int(parameters["width"]), int(parameters["height"])
        latent = (info.metadata.get("EmptyLatentImage") or [None])[0] if isinstance(info.metadata, dict) else None
        if isinstance(latent, dict) and "width" in latent:
            return int(latent["width"]), int(latent["height"])
        resolution = parameters.get("resolution")     # Fooocus: "(1152, 896)"
        if isinstance(resolution, str):
            w, h = re.findall(r"\d+", resolution)[:2]
            return int(w), int(h)
    except (ValueError, TypeError, KeyError):
        return None
    return None


def nearest_multiple_of_8(value: int, name: str, where) -> int:
    """A size another tool wrote (A1111's "resize by" gives 700x525) rounded to what diffusion needs."""
    rounded = max(8, int(round(value / 8)) * 8)
    if rounded != value:
        warn(f"{where}: {name} {value} is not a multiple of 8; using {rounded}")
    return rounded
