"""Session: the one owner of models in a kernel. Loads once, generates, records.

`generate()` reads as numbered steps, like a diffusers pipeline's __call__:
validate (no model work), load or reuse, configure (scheduler, LoRAs, options),
denoise with the StepRecorder, record in the log.
"""
from __future__ import annotations

import contextlib
import gc
import inspect
import secrets
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from . import families
from .controlnet import HUB_CONTROLNETS
from .errors import OutOfMemoryError, ParamError
from .log import ExperimentLog
from . import modes
from .lora import LoraInfo, apply_strengths, bundled_loras, lora_info, lora_shapes
from .models import ModelRef, builtin_assets, dtype_kwargs, load_pipeline, resolve, weights_hash
from .options import Options
from .options import apply as apply_options
from .params import GenerationParams
from .preview import StepRecorder, factors_for
from .quiet import quiet_diffusers, quiet_loading
from .previewers import Previewer, VaeDecoder, check_method, check_size, fallback_warning, load_tiny_decoder, \
    missing_note, preview_size
from .run import Run
from .schedulers import check_steps, make_scheduler, sampler_name
from .validate import close_matches

DEFAULT_LOG_DIR = "sd-runs"


@dataclass
class LoadedModel:
    """A model loaded once, and the pipelines built on its components."""

    ref: ModelRef
    pipe: object                                    # text-to-image pipeline
    original_scheduler: object                      # the model's own, pristine
    hash_future: object                             # concurrent.futures.Future of the content hash
    latent_rgb: object
    family: str = "sd1"                             # families.detect, from the component configs
    variants: dict = field(default_factory=dict)    # (task, control kinds) -> pipeline sharing components
    controlnets: dict = field(default_factory=dict) # kind -> ControlNetModel
    loras: set = field(default_factory=set)         # adapter names loaded into the denoiser
    compiled_shapes: set = field(default_factory=set)  # (pipeline, width, height, batch) compiled for
    previewers: dict = field(default_factory=dict)  # preview method -> converter (tiny decoder loaded once)

    @property
    def weights_hash(self) -> str:
        """The content hash of the weight files (waits for the background hashing if still running)."""
        try:
            return self.hash_future.result()
        except OSError as exc:     # an unreadable file costs the hash, not the run's record
            warnings.warn(f"model {self.ref.name}: could not hash the weight files ({exc})", stacklevel=2)
            return ""

    @property
    def hash_ready(self) -> bool:
        return self.hash_future.done()

    @property
    def native_size(self) -> tuple[int, int]:
        denoiser = getattr(self.pipe, "unet", None) or self.pipe.transformer
        size = denoiser.config.sample_size
        size = size if isinstance(size, (list, tuple)) else (size, size)
        f = self.pipe.vae_scale_factor
        return int(size[1] * f), int(size[0] * f)


class Session:
    """One pipeline cache, one experiment log, one place that runs diffusion."""

    def __init__(self, log_dir=DEFAULT_LOG_DIR, device: str | None = None, dtype=None, model: str | None = None,
                 allow_unsafe: bool = False, preview_method: str | None = None, preview_size: int | None = None,
                 prompt_syntax: str = "plain", **options):
        self._device, self._dtype = device, dtype
        self.options = Options().update(**options)
        self._check_offload(self.options)
        self.prompt_syntax = GenerationParams("", prompt_syntax=prompt_syntax).prompt_syntax   # validated (issue 25)
        check_method(preview_method)
        check_size(preview_size)
        # how step previews are made (sdwidgets.previewers); None: the best the model has
        self.preview_method, self.preview_size = preview_method, preview_size
        self._tiny_sources: dict[str, str] = {}
        self.default_model = model
        self.allow_unsafe = allow_unsafe
        self.log = ExperimentLog(log_dir, session=self)
        self.log.check_writable()       # a file or a read-only folder fails here, not after a run
        self._models: dict[str, LoadedModel] = {}
        self._loras: dict[str, LoraInfo] = {}
        self._controlnet_sources: dict[tuple[str, str], str] = {}
        self._run_lock = threading.Lock()
        self._stop = threading.Event()
        self._active = 0            # runs inside generate(), waiting or running
        self._active_lock = threading.Lock()
        self.loads = 0              # models read from disk: a knob change must never raise this
        self.detectors: dict = {}   # name -> fn(image) -> boxes, for detail={"detector": name} (issue 25)
        self.running = False

    # ---- device -----------------------------------------------------------------------------
    @property
    def device(self) -> str:
        if self._device is None:
            import torch

            self._device = "cuda" if torch.cuda.is_available() else \
                "mps" if torch.backends.mps.is_available() else "cpu"
        return self._device

    @property
    def dtype(self):
        import torch

        if self._dtype is None:
            self._dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        elif isinstance(self._dtype, str):
            self._dtype = getattr(torch, self._dtype)
        return self._dtype

    # ---- models -----------------------------------------------------------------------------
    def resolve(self, model: str | None = None) -> ModelRef:
        return resolve(model if model is not None else self.default_model, allow_unsafe=self.allow_unsafe)

    def pipeline(self, model: str | None = None):
        """The loaded text-to-image diffusers pipeline (loads it on first use)."""
        return self._load(self.resolve(model)).pipe

    def _load(self, ref: ModelRef) -> LoadedModel:
        if ref.key in self._models:
            return self._models[ref.key]
        # the content hash reads every weight file: in the background, so the first image never waits
        # for it (a hub model is hashed from its local snapshot, which exists once it has loaded)
        hashing = None if ref.kind == "hub" else _hash_in_background(ref)
        with quiet_loading():      # the caller says "loading model…"; the libraries' bars would stay behind
            pipe = load_pipeline(ref, torch_dtype=self.dtype, safety_checker=self.options.safety_checker)
        hashing = hashing or _hash_in_background(ref)
        self.loads += 1
        pipe.set_progress_bar_config(disable=not self.options.progress, leave=False)
        if self.options.cpu_offload is None:
            pipe.to(self.device)
        apply_options(pipe, self.options, self.device)
        loaded = LoadedModel(ref, pipe, pipe.scheduler, hashing, factors_for(pipe, builtin_assets(ref)),
                             family=families.detect(pipe))
        self._models[ref.key] = loaded
        return loaded

    def unload(self, model: str | None = None) -> bool:
        """Free a loaded model (all its pipelines). Returns whether anything was loaded."""
        loaded = self._models.pop(self.resolve(model).key, None)
        was_loaded = loaded is not None
        del loaded
        gc.collect()
        if self._device and self._device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        return was_loaded

    def native_size(self, model: str | None = None) -> tuple[int, int]:
        """(width, height) the model was trained at (loads it on first use)."""
        return self._load(self.resolve(model)).native_size

    def is_loaded(self, model: str | None = None) -> bool:
        """Whether `model` (None: the default) is loaded, i.e. its next run starts without loading
        (False for a name that resolves to no model: its run will say why)."""
        try:
            return self.resolve(model).key in self._models
        except ParamError:
            return False

    @property
    def loaded_models(self) -> list[str]:
        return [m.ref.name for m in self._models.values()]

    def set_options(self, **changes) -> Options:
        """Change memory/speed options; applied to every loaded pipeline, never reloading weights.

        All or nothing: if an option cannot be applied, the previous options stay (and are re-applied).
        """
        previous, wanted = self.options, self.options.update(**changes)
        self._check_offload(wanted)
        try:
            self._apply_options(wanted, changes)
        except Exception:
            self._apply_options(previous, {})
            raise
        return self.options

    def _apply_options(self, options: Options, changes: dict) -> None:
        self.options = options
        for loaded in self._models.values():
            if "safety_checker" in changes and not options.safety_checker:
                loaded.pipe.safety_checker = None
            for pipe in [loaded.pipe, *loaded.variants.values()]:
                apply_options(pipe, options, self.device)
                pipe.set_progress_bar_config(disable=not options.progress, leave=False)

    def _check_offload(self, options: Options) -> None:
        if options.cpu_offload is not None and not self.device.startswith(("cuda", "xpu", "mps")):
            raise ParamError(f"cpu_offload={options.cpu_offload!r} moves weights between the CPU and an accelerator; "
                             f"this session runs on {self.device!r}, where it cannot help: leave cpu_offload=None")

    # ---- LoRA and ControlNet sources ---------------------------------------------------------
    def load_lora(self, path, name: str | None = None) -> LoraInfo:
        """Register a LoRA file under `name`; use it with loras={name: strength}.

        It is loaded into a model the first time a run asks for it, once; strengths change per run.
        """
        info = lora_info(path, name, allow_unsafe=self.allow_unsafe)
        old = self._loras.get(info.name)
        if old is not None and old.path != info.path:
            for loaded in self._models.values():   # same name, new file: replace the adapter
                if info.name in loaded.loras:
                    loaded.pipe.delete_adapters(info.name)
                    loaded.loras.discard(info.name)
        self._loras[info.name] = info
        return info

    def loras(self, model: str | None = None) -> dict[str, LoraInfo]:
        """LoRAs usable with `model`: the model's bundled ones and those loaded with load_lora."""
        return self._known_loras(self.resolve(model))

    def _known_loras(self, ref: ModelRef) -> dict[str, LoraInfo]:
        return {**bundled_loras(builtin_assets(ref)), **self._loras}

    def register_controlnet(self, kind: str, source: str, model: str | None = None) -> None:
        """Use ControlNet `source` (folder or hub id) for controls of `kind` with `model`."""
        self._controlnet_sources[(self.resolve(model).key, kind)] = source

    def controlnet_source(self, kind: str, model: str | None = None) -> str | None:
        """Where the `kind` ControlNet for `model` comes from (None: none known before loading)."""
        ref = self.resolve(model)
        family = self._models[ref.key].family if ref.key in self._models else None
        return self._controlnet_source(ref, kind, family)

    def _controlnet_source(self, ref: ModelRef, kind: str, family: str | None = None) -> str | None:
        """Registered source, else the builtin model's own folder, else the hub default for the family."""
        if (ref.key, kind) in self._controlnet_sources:
            return self._controlnet_sources[(ref.key, kind)]
        assets = builtin_assets(ref)
        if assets is not None:
            folder = assets / f"controlnet-{kind}"
            return str(folder) if folder.is_dir() else None
        return HUB_CONTROLNETS.get((family, kind))

    # ---- previews ---------------------------------------------------------------------------
    def set_tiny_decoder(self, source, model: str | None = None) -> None:
        """Use AutoencoderTiny weights `source` (folder or hub id, e.g. madebyollin/taesd) for `model`'s
        ``tiny`` previews."""
        ref = self.resolve(model)
        self._tiny_sources[ref.key] = str(source)
        if ref.key in self._models:
            self._models[ref.key].previewers.clear()

    def _previewer(self, loaded: LoadedModel, method: str | None, width: int, height: int,
                   size: int | None) -> Previewer:
        """The run's preview method (the best available when None) and its converter."""
        method = method or self.preview_method
        if method in (None, "tiny"):
            tiny = self._tiny_decoder(loaded, explicit=method == "tiny")
            method = "tiny" if tiny is not None else "approx"
        convert = loaded.previewers.get("tiny") if method == "tiny" else \
            VaeDecoder(loaded.pipe.vae) if method == "full" else loaded.latent_rgb
        size = preview_size(width, height, size if size is not None else self.preview_size)
        return Previewer(method, convert, size, noisy_convert=loaded.latent_rgb)

    def _tiny_decoder(self, loaded: LoadedModel, explicit: bool):
        if "tiny" in loaded.previewers or ("tiny-missing" in loaded.previewers and not explicit):
            return loaded.previewers.get("tiny")
        ref, family = loaded.ref, loaded.family
        folder = builtin_assets(ref) or (Path(ref.location) if ref.kind == "folder" else None)
        tiny = load_tiny_decoder(loaded.pipe, registered=self._tiny_sources.get(ref.key), folder=folder,
                                 family=family, explicit=explicit)
        if tiny is not None:
            loaded.previewers["tiny"] = tiny
            return tiny
        note = missing_note(ref.name, folder, family)
        if explicit:
            raise ParamError(f"preview_method='tiny': {note}")
        loaded.previewers["tiny-missing"] = note
        fallback_warning(note)      # once per loaded model
        return None

    # ---- running ---------------------------------------------------------------------------
    def interrupt(self) -> None:
        """Stop the current run after the step in progress (thread-safe).

        A run that has been asked for but not started yet is stopped too; with no run
        at all nothing happens (a stale request never stops a later run).
        """
        with self._active_lock:
            if self._active:
                self._stop.set()

    def generate(self, prompt: str | None = None, *, params: GenerationParams | None = None, tags: dict | None = None,
                 on_step=None, preview: str = "both", preview_every: int = 1, decode_every: int | None = None,
                 preview_method: str | None = None, preview_size: int | None = None, **kwargs) -> Run:
        """Generate images; see GenerationParams for the arguments. Returns the Run (also logged).

        on_step(recorder) is called after each recorded step, on the generating thread.
        `preview` says which series to keep (both, x0, noisy, none); `preview_method` how a latent
        becomes a frame (tiny, approx, full, none; None: the session's, else the best the model has);
        `preview_size` the frames' longest side (None: the output size).
        """
        # 1. Validate everything before any model work
        if params is None:
            params = GenerationParams(prompt=prompt if prompt is not None else "", **kwargs)
        elif prompt is not None or kwargs:
            params = params.replace(**({"prompt": prompt} if prompt is not None else {}), **kwargs)
        if preview not in ("both", "x0", "noisy", "none"):
            raise ParamError(f"preview must be one of both, x0, noisy, none; got {preview!r}")
        if isinstance(preview_every, bool) or not isinstance(preview_every, int) or preview_every < 1:
            raise ParamError(f"preview_every must be a positive integer, got {preview_every!r}")
        self.log.check_writable()
        check_method(preview_method)
        check_size(preview_size)
        ref = self.resolve(params.model)
        self._check_loras(ref, params)
        self._check_controls(ref, params)
        modes.check(self, params)      # issue 25: e.g. the detail pass's detector
        # record what actually runs: the drawn seed and the resolved model
        params = params.replace(seed=params.seed if params.seed is not None else secrets.randbelow(2**32),
                                model=ref.name if ref.kind in ("builtin", "hub") else ref.location,
                                prompt_syntax=params.prompt_syntax or self.prompt_syntax)

        with self._active_lock:
            self._active += 1
        try:
            with self._run_lock:
                self.running = True
                try:
                    return self._generate(ref, params, tags or {}, on_step, preview, preview_every, decode_every,
                                          preview_method, preview_size)
                finally:
                    self.running = False
        finally:
            with self._active_lock:
                self._active -= 1
                self._stop.clear()     # the request ends with the run it stopped

    def evaluate(self, prompt_set, grid: dict | None = None, seeds=(0,), scorers=None, **kwargs):
        """Run a design (grid configurations x prompts x seeds, one logged image each) and score it.

        Resumable: cells already in the log with the same parameters are reused. Returns an
        Evaluation (.df, .summary(), .compare(a, b, score), plots); see sdwidgets.evaluation.
        """
        from .evaluation.design import evaluate

        return evaluate(self, prompt_set, grid, seeds, scorers, **kwargs)

    def seed_travel(self, prompt: str, seeds, frames: int = 8, **kwargs):
        """Frames from each seed's image to the next (variation seeds), each a logged run (modes/travel.py)."""
        from .modes.travel import seed_travel

        return seed_travel(self, prompt, seeds, frames, **kwargs)

    def _check_loras(self, ref: ModelRef, params: GenerationParams) -> None:
        known = self._known_loras(ref) if params.loras else {}
        for name, _ in params.loras:
            if name not in known:
                near = close_matches(name, known)
                hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(known) or 'none'}"
                raise ParamError(f"loras: unknown LoRA {name!r}; {hint} (add one with session.load_lora(path, name))")

    def _check_controls(self, ref: ModelRef, params: GenerationParams) -> None:
        if ref.kind != "builtin":
            return      # other models: checked once loaded, when their family (SD1/SDXL) is known
        for control in params.controls:
            if self._controlnet_source(ref, control.kind) is None:
                raise ParamError(f"controls: no {control.kind!r} ControlNet for model {ref.name!r}; "
                                 "register one with session.register_controlnet(kind, folder_or_hub_id)")

    def _generate(self, ref, params, tags, on_step, preview, preview_every, decode_every, preview_method,
                  preview_size) -> Run:
        import torch

        # 2. Load (once) and pick the pipeline that shares the loaded components
        loaded = self._load(ref)
        families.check_sampler(loaded.family, params.scheduler)
        pipe = self._variant(loaded, params)
        width, height = (params.width or loaded.native_size[0]), (params.height or loaded.native_size[1])
        factor = loaded.pipe.vae_scale_factor
        if width % factor or height % factor:
            raise ParamError(f"width/height must be multiples of {factor} for this model, got {width}x{height}")
        # 3. Configure: a fresh scheduler, LoRA strengths, options (none of these reload weights)
        previewer = self._previewer(loaded, preview_method, width, height, preview_size)
        keep = "none" if previewer.method == "none" else preview
        recorder = StepRecorder(previewer, params.steps, every=preview_every, keep=keep,
                                decode_every=decode_every, stop_event=self._stop,
                                listeners=[on_step] if on_step else [])
        self._load_loras(loaded, params)
        apply_strengths(pipe, loaded.loras, params.loras)
        apply_options(pipe, self.options, self.device)
        self._tell_if_compiling(loaded, pipe, width, height, params.batches)
        scheduler = make_scheduler(params.scheduler, loaded.original_scheduler)
        check_steps(scheduler, params.steps)      # before denoising, not at its last step
        params = params.replace(width=width, height=height)     # the log records the size that ran
        run = Run(run_id=new_run_id(), params=params, sampler=sampler_name(scheduler), model_name=ref.name,
                  pipeline_class=type(pipe).__name__, tags=dict(tags), preview_method=previewer.method)
        # 4. Denoise, a batch of images per call (image i: seed + i, its own CPU generator). The run's
        # scheduler is set for the call only: the loaded pipeline is left as it was found.
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        error = None
        found_scheduler = pipe.scheduler
        try:
            first = 0
            for count in params.batches:
                pipe.scheduler = recorder.start_batch(first, count, make_scheduler(params.scheduler, loaded.original_scheduler))
                # -- modes (issue 25, sdwidgets/modes): variation noise, prompt embeds, mask; then
                #    the passes after the call (Hires. fix, inpaint paste-back, detail)
                call = modes.prepare_call(pipe, params, self._call_arguments(params, width, height, params.seed + first,
                                                                             count), run)
                if params.controls and params.init_image is None and "image" not in inspect.signature(pipe.__call__).parameters:
                    call["control_image"] = call.pop("image")    # SD3's ControlNet pipeline names it so
                with _seeded_global_rng(params.seed + first, self.device):
                    out = pipe(**call, callback_on_step_end=recorder)
                run.images += modes.finish(self, loaded, params, call, out.images, params.seed + first)
                # -- end modes
                flagged = getattr(out, "nsfw_content_detected", None)
                run.nsfw = None if flagged is None else (run.nsfw or []) + list(flagged)
                first += count
                if recorder.interrupted:
                    break
            run.status = "interrupted" if recorder.interrupted else "ok"
        except KeyboardInterrupt:
            run.status = "interrupted"
        except torch.OutOfMemoryError:
            run.status, run.error = "failed", "out of memory"
            error = OutOfMemoryError(f"Out of memory on {self.device} at {width}x{height} x{params.num_images}; "
                                     + self.options.oom_advice(width, height, params.num_images))
        except Exception as exc:  # logged as failed, then re-raised unchanged
            run.status, run.error = "failed", f"{type(exc).__name__}: {exc}"
            error = exc
        finally:
            pipe.scheduler = found_scheduler
            recorder.finish()
            run.duration_s = time.perf_counter() - start
        for name in ("frames", "noisy_frames", "decoded_frames", "steps", "timesteps", "sigmas", "step_times",
                     "preview_seconds"):
            setattr(run, name, getattr(recorder, name))
        # 5. Record
        self.log.add(run, self._context(loaded, pipe, run, width, height))
        if error is not None:
            self._free_after_error()
            if isinstance(error, OutOfMemoryError):
                raise error from None
            raise error
        return run

    def _tell_if_compiling(self, loaded: LoadedModel, pipe, width: int, height: int, batches: list) -> None:
        """torch.compile works at the first call for each shape: say so, once per model and shape."""
        if not (self.options.compile or self.options.fast):
            return
        shapes = {(type(pipe).__name__, width, height, n) for n in batches} - loaded.compiled_shapes
        if shapes:
            loaded.compiled_shapes |= shapes
            if self.options.progress:
                sizes = ", ".join(sorted({f"{w}x{h} x{n}" for _, w, h, n in shapes}))
                print(f"sdwidgets: compiling the denoiser for {sizes} (first run only; later runs reuse it)",
                      file=sys.stderr, flush=True)

    def _variant(self, loaded: LoadedModel, params: GenerationParams):
        """txt2img is the loaded pipe; img2img/ControlNet pipes reuse its components (from_pipe)."""
        import diffusers

        refiner = loaded.family == "sdxl-refiner"
        if refiner and params.init_image is None:
            raise ParamError(f"init_image: {loaded.ref.name!r} is an SDXL refiner, it only refines an image; "
                             "pass init_image (image-to-image)")
        if params.task == "txt2img":
            return loaded.pipe
        kinds = tuple(c.kind for c in params.controls)
        key = (params.task, kinds)
        if key not in loaded.variants:
            extra = {"requires_aesthetics_score": True} if refiner else {}
            if kinds:
                nets = [self._controlnet(loaded, k) for k in kinds]
                extra["controlnet"] = nets[0] if len(nets) == 1 else nets
            auto = diffusers.AutoPipelineForImage2Image if params.init_image is not None else diffusers.AutoPipelineForText2Image
            if modes.pipeline_kind(params) == "inpaint":     # issue 25: plain checkpoints inpaint too
                auto = diffusers.AutoPipelineForInpainting
            variant = auto.from_pipe(loaded.pipe, **extra)
            variant.set_progress_bar_config(disable=not self.options.progress, leave=False)
            loaded.variants[key] = variant
        return loaded.variants[key]

    def _controlnet(self, loaded: LoadedModel, kind: str):
        if kind not in loaded.controlnets:
            import diffusers

            source = self._controlnet_source(loaded.ref, kind, loaded.family)
            if source is None:
                raise ParamError(f"controls: no {kind!r} ControlNet for model {loaded.ref.name!r} ({loaded.family})")
            cls_name = families.FAMILIES[loaded.family].controlnet_class or "ControlNetModel"
            cls = getattr(diffusers, cls_name)
            config = cls.load_config(source)    # config only: a wrong family fails before any weights load
            families.check_controlnet(loaded.family, config, config.get("_class_name", cls_name), source,
                                      dict(self._denoiser(loaded).config))
            net = cls.from_pretrained(source, **dtype_kwargs(self.dtype))
            loaded.controlnets[kind] = net.to(self.device) if self.options.cpu_offload is None else net
        return loaded.controlnets[kind]

    def _load_loras(self, loaded: LoadedModel, params: GenerationParams) -> None:
        known = self._known_loras(loaded.ref)
        for name, _ in params.loras:   # check them all before loading any: a mismatch leaves the model as it was
            if name not in loaded.loras and known[name].path.suffix.lower() == ".safetensors":
                families.check_lora(loaded.family, self._denoiser(loaded).config.get("cross_attention_dim"), name,
                                    lora_shapes(known[name].path))
        for name, _ in params.loras:
            if name not in loaded.loras:
                with quiet_diffusers():   # "no LoRA keys for the text encoder" is expected for UNet LoRAs
                    loaded.pipe.load_lora_weights(str(known[name].path), adapter_name=name)
                loaded.loras.add(name)

    @staticmethod
    def _denoiser(loaded: LoadedModel):
        return getattr(loaded.pipe, "unet", None) or loaded.pipe.transformer

    @staticmethod
    def _call_arguments(params: GenerationParams, width: int, height: int, seed: int, count: int = 1) -> dict:
        """Arguments of one pipeline call for `params`: `count` images, seeds seed .. seed+count-1."""
        import torch

        # CPU generators: the same noise on every device (diffusers' reproducibility advice), one per
        # image, so each image's noise is that of a lone run with its seed
        generators = [torch.Generator("cpu").manual_seed(seed + k) for k in range(count)]
        call = dict(prompt=params.prompt, negative_prompt=params.negative_prompt or None,
                    num_inference_steps=params.steps, guidance_scale=params.guidance_scale, output_type="pil",
                    num_images_per_prompt=count, generator=generators[0] if count == 1 else generators)
        controls = [c.preview((width, height)) for c in params.controls]
        if params.init_image is not None:
            call.update(image=params.init_image.resize((width, height)), strength=params.strength)
            if controls:
                call["control_image"] = controls[0] if len(controls) == 1 else controls
        else:
            call.update(width=width, height=height)
            if controls:
                call["image"] = controls[0] if len(controls) == 1 else controls
        if controls:
            pick = (lambda values: values[0]) if len(controls) == 1 else list
            call.update(controlnet_conditioning_scale=pick([c.scale for c in params.controls]),
                        control_guidance_start=pick([c.start for c in params.controls]),
                        control_guidance_end=pick([c.end for c in params.controls]))
        return call

    def _context(self, loaded: LoadedModel, pipe, run: Run, width: int, height: int) -> dict:
        import diffusers
        import torch

        if self.device.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # process peak RSS (KiB on Linux)
        mode = families.speed_mode(run.sampler, [n for n, s in run.params.loras if s], loaded.ref.name)
        return {"model": loaded.ref.name, "model_hash": loaded.weights_hash, "scheduler": run.sampler,
                "family": families.label(loaded.family, mode),
                "width": width, "height": height, "peak_memory_mb": round(peak, 1), "device": self.device,
                "dtype": str(self.dtype).replace("torch.", ""), "torch_version": torch.__version__,
                "preview": run.preview_method,
                "diffusers_version": diffusers.__version__,
                "safety_checker": getattr(pipe, "safety_checker", None) is not None and run.nsfw is not None}

    def _free_after_error(self) -> None:
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return (f"Session(log_dir={str(self.log.dir)!r}, device={self._device or 'auto'!r}, "
                f"models={self.loaded_models}, runs={len(self.log)})")


def _hash_in_background(ref: ModelRef):
    """A Future of weights_hash(ref), computed on a daemon thread (hashlib releases the GIL)."""
    from concurrent.futures import Future

    future = Future()

    def work():
        try:
            future.set_result(weights_hash(ref))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever reads the hash
            future.set_exception(exc)

    threading.Thread(target=work, name=f"sdwidgets-hash-{ref.name}", daemon=True).start()
    return future


@contextlib.contextmanager
def _seeded_global_rng(seed: int, device: str):
    """Randomness a pipeline draws without our generator (SD3 ControlNet samples its control latent
    that way) becomes a function of the seed; the caller's global RNG state is left as it was."""
    import torch

    with torch.random.fork_rng(devices=[torch.device(device)] if device.startswith("cuda") else []):
        torch.manual_seed(seed)
        yield


def new_run_id() -> str:
    """Sortable by time, unique across processes: 48 random bits (2,000 ids drawn at once collide
    with odds of about 1e-8; the log also never overwrites a file)."""
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(6)


_default: Session | None = None
_default_lock = threading.Lock()


def session(**kwargs) -> Session:
    """The kernel's default Session (created on first use; kwargs apply only then)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Session(**kwargs)
        return _default


def set_session(value: Session | None) -> Session | None:
    """Replace the default Session (e.g. another log_dir); returns the previous one."""
    global _default
    with _default_lock:
        previous, _default = _default, value
        return previous

