"""Step-by-step latent previews.

A linear map from latent channels to RGB (ComfyUI/AUTOMATIC1111's "approx" preview)
costs a few microseconds per step; the other methods (a tiny decoder, the VAE) are in
:mod:`sdwidgets.previewers`, behind the same ``to_images(latents)``. `StepRecorder` is the diffusers
`callback_on_step_end`; it keeps, for every k-th step, the preview of the predicted
clean image (x0, captured from the scheduler's step output) and of the noisy latent.
"""
from __future__ import annotations

import functools
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .images import grid

# Public factors (ComfyUI latent_formats.py); applied to model-space latents, output in [-1, 1].
SD15_FACTORS = [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350],
                [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]]
SDXL_FACTORS = [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068],
                [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]]
SDXL_BIAS = [0.1084, -0.0175, -0.0011]
SD3_FACTORS = [
    [-0.0922, -0.0175, 0.0749], [0.0311, 0.0633, 0.0954], [0.1994, 0.0927, 0.0458], [0.0856, 0.0339, 0.0902],
    [0.0587, 0.0272, -0.0496], [-0.0006, 0.1104, 0.0309], [0.0978, 0.0306, 0.0427], [-0.0042, 0.1038, 0.1358],
    [-0.0194, 0.0020, 0.0669], [-0.0488, 0.0130, -0.0268], [0.0922, 0.0988, 0.0951], [-0.0278, 0.0524, -0.0542],
    [0.0332, 0.0456, 0.0895], [-0.0069, -0.0030, -0.0810], [-0.0596, -0.0465, -0.0293], [-0.1448, -0.1463, -0.1189],
]
SD3_BIAS = [0.2394, 0.2135, 0.1925]
FACTORS_FILE = "preview_factors.json"
# Family table key (families.Family.preview) -> (factors, bias)
PUBLIC_FACTORS = {"sd1": (SD15_FACTORS, [0.0, 0.0, 0.0]), "sdxl": (SDXL_FACTORS, SDXL_BIAS), "sd3": (SD3_FACTORS, SD3_BIAS)}


@dataclass
class LatentRGB:
    """latent (C channels) -> RGB in [-1, 1]: rgb = latent @ factors + bias."""

    factors: list      # C x 3
    bias: list         # 3

    def __post_init__(self):
        self._cache = {}

    def to_images(self, latents):
        """[B, C, h, w] tensor -> list of PIL images at latent resolution."""
        from .hostcopy import rgb8_to_images

        return rgb8_to_images(self.to_rgb8(latents))

    def to_rgb8(self, latents):
        """[B, C, h, w] tensor -> [B, h, w, 3] uint8 tensor on the same device (no device sync)."""
        import torch

        key = (latents.device, latents.dtype)
        if key not in self._cache:
            self._cache[key] = (torch.tensor(self.factors, device=latents.device, dtype=latents.dtype),
                                torch.tensor(self.bias, device=latents.device, dtype=latents.dtype))
        factors, bias = self._cache[key]
        rgb = torch.einsum("bchw,cr->bhwr", latents, factors) + bias
        return ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8)

    def save(self, path):
        Path(path).write_text(json.dumps({"factors": self.factors, "bias": self.bias}, indent=1))

    @classmethod
    def load(cls, path) -> "LatentRGB":
        data = json.loads(Path(path).read_text())
        return cls(data["factors"], data.get("bias", [0.0, 0.0, 0.0]))


def factors_for(pipe, asset_dir: Path | None = None) -> LatentRGB:
    """The preview map for a pipeline: shipped factors file, else the family's public factors,
    else a fit on the pipeline's own VAE."""
    for folder in (asset_dir, _folder_of(pipe)):
        if folder is not None and (Path(folder) / FACTORS_FILE).is_file():
            return LatentRGB.load(Path(folder) / FACTORS_FILE)
    from .families import FAMILIES, detect

    family = FAMILIES[detect(pipe)]
    vae = pipe.vae.config
    # the public factors describe the full-size VAEs (512-wide last block); any other VAE gets a fit
    if vae.latent_channels == family.latent_channels and vae.get("block_out_channels", [0])[-1] == 512:
        return LatentRGB(*PUBLIC_FACTORS[family.preview])
    return fit_latent_rgb(pipe.vae)


def _folder_of(pipe):
    path = getattr(pipe.config, "_name_or_path", None) or pipe.config.get("_name_or_path")
    return Path(path) if path and Path(path).is_dir() else None


def fit_latent_rgb(vae, images=None, latents=None, ridge: float = 0.03, n: int = 16, size: int = 64,
                   seed: int = 0) -> LatentRGB:
    """Ridge least-squares fit of latent -> RGB on the VAE's own decodes.

    The latents are `latents` (model space, e.g. what the denoiser produced), or encoded
    from `images`, or drawn at random; each is decoded, the decode is area-averaged down
    to latent resolution, and `[latent, 1] @ W ~= rgb` is solved for W. `ridge` (relative
    to the mean diagonal of the normal matrix) keeps W small: denoiser outputs sit off the
    encoder's manifold, and an unregularised fit amplifies that into noise.
    """
    import torch
    import torch.nn.functional as F

    from . import latents as L

    if latents is not None:
        z = latents
    elif images is not None:
        z = L.encode(vae, images)
    else:
        g = torch.Generator().manual_seed(seed)
        f = 2 ** (len(vae.config.block_out_channels) - 1)
        z = torch.randn(n, vae.config.latent_channels, size // f, size // f, generator=g).to(next(vae.parameters()))
    target = F.adaptive_avg_pool2d(L.decode(vae, z), z.shape[-2:])
    a = torch.cat([z.detach().double().permute(0, 2, 3, 1).reshape(-1, z.shape[1]),
                   torch.ones(z.numel() // z.shape[1], 1, dtype=torch.float64)], dim=1)
    b = target.double().permute(0, 2, 3, 1).reshape(-1, 3)
    normal = a.T @ a
    penalty = ridge * normal.diagonal().mean() * torch.eye(a.shape[1], dtype=torch.float64)
    penalty[-1, -1] = 0                      # the bias is not shrunk
    w = torch.linalg.solve(normal + penalty, a.T @ b)
    return LatentRGB(w[:-1].tolist(), w[-1].tolist())


@dataclass
class StepRecorder:
    """`callback_on_step_end` that records previews and honours interrupts.

    A run makes its images in batches (one pipeline call each); `start_batch` is called
    before each. Every `every` steps the recorder keeps the x0 preview and the
    noisy-latent preview of every image of the batch; `frames` / `noisy_frames` give one
    picture per recorded step with the images side by side. `listeners` are called with
    the recorder after each recorded step (live displays); they run on the generating
    thread and see previews one step late (`latest`): a preview's device->host copy is
    left in flight for a step so the loop never waits for the device (see hostcopy).
    Nothing is captured when nothing is kept (keep="none") and no decode is asked for.
    """

    latent_rgb: LatentRGB
    total_steps: int
    every: int = 1
    keep: str = "both"                  # "x0" | "noisy" | "both" | "none"
    decode_every: int | None = None     # exact VAE decode of x0 every k steps (slow)
    stop_event: threading.Event | None = None
    listeners: list = field(default_factory=list)
    steps: list = field(default_factory=list)          # step numbers recorded (same for every image)
    timesteps: list = field(default_factory=list)
    sigmas: list = field(default_factory=list)
    step_times: list = field(default_factory=list)
    preview_seconds: float = 0.0
    interrupted: bool = False
    image_index: int = 0                # first image of the batch being denoised
    batch_count: int = 1                # images in that batch

    def __post_init__(self):
        from .hostcopy import PendingCopies

        self._x0 = None
        self._t_last = time.perf_counter()
        self._frames: list[list] = []       # per image: x0 previews by recorded step
        self._noisy: list[list] = []
        self._decoded: list[dict] = []      # per image: step -> exact decode
        self._copies = PendingCopies()

    @property
    def captures(self) -> bool:
        """Whether the scheduler's step is wrapped to capture x0 (only when something uses it)."""
        return self.keep in ("x0", "both") or bool(self.decode_every)

    def start_image(self, index: int, scheduler):
        """Begin image `index` alone (a batch of one)."""
        return self.start_batch(index, 1, scheduler)

    def start_batch(self, first: int, count: int, scheduler):
        """Begin images first .. first+count-1 in one call; wraps the run's own (fresh) scheduler's
        step to capture the predicted x0. The scheduler belongs to this run, never to the pipeline."""
        self.finish()
        self.image_index, self.batch_count = first, count
        for series in (self._frames, self._noisy, self._decoded):
            while len(series) < first + count:
                series.append({} if series is self._decoded else [])
        self._x0 = None
        self._t_last = time.perf_counter()
        if not self.captures:
            return scheduler
        step = scheduler.step

        @functools.wraps(step)  # keeps the signature: pipelines pass `generator` only if step() takes it
        def step_and_capture(*args, **kwargs):
            names = ("model_output", "timestep", "sample")
            inputs = dict(zip(names, args), **{k: v for k, v in kwargs.items() if k in names})
            flow_x0 = _flow_x0(scheduler, **inputs)    # needs the sigma before step() advances it
            out = step(*args, **kwargs)
            self._x0 = flow_x0 if flow_x0 is not None else _predicted_x0(scheduler, out)
            if self._x0 is None:    # e.g. PNDM/PLMS, TCD: derive x0 from the model output
                self._x0 = _x0_from_model_output(scheduler, **inputs)
            return out

        scheduler.step = step_and_capture
        return scheduler

    def finish(self) -> None:
        """Resolve the preview still in flight and any deferred timesteps (one wait, at the end)."""
        self._copies.resolve()
        for values in (self.timesteps, self.sigmas):
            for k, value in enumerate(values):
                if value is not None and not isinstance(value, float):
                    values[k] = float(value)

    def __call__(self, pipe, i, t, callback_kwargs):
        now = time.perf_counter()
        self.step_times.append(now - self._t_last)
        if self.stop_event is not None and self.stop_event.is_set():
            pipe._interrupt = True     # diffusers skips the remaining steps
            self.interrupted = True
        self.total_steps = getattr(pipe, "_num_timesteps", None) or self.total_steps  # img2img runs fewer
        step = i + 1
        last = step == self.total_steps
        decoded = bool(self.decode_every) and (step % self.decode_every == 0 or last)
        if decoded:   # before the listeners, so a live view shows this step's decode
            from . import latents as L

            x0 = self._x0 if self._x0 is not None else callback_kwargs["latents"]
            for k, image in enumerate(L.to_images(L.decode(pipe.vae, x0))):
                self._decoded[self.image_index + k][step] = image
        recorded = self.keep != "none" and (step % self.every == 0 or last)
        if recorded:
            self._record(pipe, step, t, callback_kwargs["latents"])
            if last and self.listeners:
                self._copies.resolve()     # the final preview is shown, not left for the next run
        if recorded or decoded:
            for listener in list(self.listeners):
                listener(self)
        self._t_last = time.perf_counter()
        return callback_kwargs

    def _record(self, pipe, step, t, latents):
        t0 = time.perf_counter()
        import torch

        from .hostcopy import host_scalar

        x0 = self._x0 if self._x0 is not None and self._x0.shape == latents.shape else None
        batch = range(self.image_index, self.image_index + self.batch_count)
        series = []    # (converter, latents, the frame list of each row) of each kept preview
        if self.keep in ("x0", "both"):
            series.append((self.latent_rgb, x0 if x0 is not None else latents, [self._frames[k] for k in batch]))
        if self.keep in ("noisy", "both"):   # a decoder would show the noise as noise, at twice the cost
            series.append((getattr(self.latent_rgb, "noisy", self.latent_rgb), latents,
                           [self._noisy[k] for k in batch]))
        scalars = []
        if self.image_index == 0:
            self.steps.append(step)
            self.timesteps.append(host_scalar(t))
            sigmas = getattr(pipe.scheduler, "sigmas", None)
            index = getattr(pipe.scheduler, "step_index", None)
            ok = sigmas is not None and index is not None and index < len(sigmas)
            self.sigmas.append(host_scalar(sigmas[index]) if ok else None)
            scalars = [(values, len(values) - 1, values[-1]) for values in (self.timesteps, self.sigmas)
                       if values[-1] is not None and not isinstance(values[-1], float)]
        # every preview of the step in one device->host copy (each would wait for the device),
        # resolved a step later; one conversion too when both series use the same converter
        targets = [frames for *_, rows in series for frames in rows]
        if len({id(convert) for convert, _, _ in series}) == 1:
            rgb8 = [_to_rgb8(series[0][0], torch.cat([lat[: self.batch_count] for _, lat, _ in series]))]
        else:
            rgb8 = [_to_rgb8(convert, lat[: self.batch_count]) for convert, lat, _ in series]
        if len({tuple(r.shape[1:]) for r in rgb8}) == 1:
            self._copies.submit(torch.cat(rgb8), targets, scalars)
        else:   # frames of different sizes: one copy per series
            for k, (r, (*_, rows)) in enumerate(zip(rgb8, series)):
                self._copies.submit(r, rows, scalars if k == 0 else ())
        self.preview_seconds += time.perf_counter() - t0

    @property
    def frames(self) -> list:
        """x0 previews, one per recorded step, images side by side."""
        self._copies.resolve()
        return _side_by_side(self._frames)

    @property
    def noisy_frames(self) -> list:
        self._copies.resolve()
        return _side_by_side(self._noisy)

    @property
    def decoded_frames(self) -> dict:
        steps = sorted(set().union(*self._decoded)) if self._decoded else []
        return {k: grid([d[k] for d in self._decoded if k in d], pad=0) for k in steps}

    @property
    def latest(self):
        """The newest shown preview of the batch being denoised (images side by side)."""
        batch = range(self.image_index, self.image_index + self.batch_count)
        for series in (self._frames, self._noisy):
            shown = [series[k][-1] for k in batch if k < len(series) and series[k]]
            if shown:
                return shown[0] if len(shown) == 1 else grid(shown, pad=0)
        return None


def _to_rgb8(latent_rgb, latents):
    """The device-side preview; a preview method without `to_rgb8` is converted at once."""
    if hasattr(latent_rgb, "to_rgb8"):
        return latent_rgb.to_rgb8(latents)
    import numpy as np
    import torch

    return torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in latent_rgb.to_images(latents)]))


def _side_by_side(per_image: list[list]) -> list:
    """Per-image frame lists -> one grid per step (an image cut short repeats its last frame)."""
    per_image = [frames for frames in per_image if frames]
    if len(per_image) <= 1:
        return list(per_image[0]) if per_image else []
    n = max(len(f) for f in per_image)
    return [grid([f[min(k, len(f) - 1)] for f in per_image], pad=0) for k in range(n)]


def _flow_x0(scheduler, model_output=None, timestep=None, sample=None):
    """Flow matching (SD3): x_t = (1 - sigma) x0 + sigma noise and the model predicts noise - x0."""
    if not type(scheduler).__name__.startswith("FlowMatch") or model_output is None or sample is None:
        return None
    if scheduler.step_index is None:
        scheduler._init_step_index(timestep)
    sigma = scheduler.sigmas[scheduler.step_index].to(sample)
    return sample - sigma * model_output


def _predicted_x0(scheduler, out):
    """x0 from a scheduler step: most return it; multistep solvers keep it in model_outputs."""
    if type(scheduler).__name__ == "TCDScheduler":
        return None     # its second output is the re-noised sample, not x0
    if isinstance(out, tuple):   # pipelines call step(..., return_dict=False): (prev_sample, x0, ...)
        return out[1] if len(out) > 1 and out[1] is not None and out[1].shape == out[0].shape else \
            _from_model_outputs(scheduler)
    for name in ("pred_original_sample", "denoised"):
        value = getattr(out, name, None)
        if value is not None:
            return value
    return _from_model_outputs(scheduler)


def _x0_from_model_output(scheduler, model_output=None, timestep=None, sample=None):
    """x0 for DDPM-style schedulers (unscaled samples): invert x_t = sqrt(a) x0 + sqrt(1 - a) eps."""
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if alphas is None or model_output is None or sample is None or float(scheduler.init_noise_sigma) != 1.0:
        return None   # sigma-scaled samplers (Euler, LMS, ...) return x0 themselves
    a = alphas[int(timestep)].to(sample)
    kind = scheduler.config.get("prediction_type", "epsilon")
    if kind == "epsilon":
        return (sample - (1 - a).sqrt() * model_output) / a.sqrt()
    if kind == "v_prediction":
        return a.sqrt() * sample - (1 - a).sqrt() * model_output
    return model_output if kind == "sample" else None


def _from_model_outputs(scheduler):
    outputs = getattr(scheduler, "model_outputs", None)
    predicts_x0 = scheduler.config.get("algorithm_type", "") in ("dpmsolver++", "sde-dpmsolver++") or \
        scheduler.config.get("predict_x0", False)
    if outputs and outputs[-1] is not None and predicts_x0:
        return outputs[-1]
    return None


def decode_latents(pipe, latents):
    """Exact previews: the VAE decode of model-space latents, as one PIL image (batch side by side)."""
    from . import latents as L

    return grid(L.to_images(L.decode(pipe.vae, latents)), pad=0)
