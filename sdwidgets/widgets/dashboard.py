"""The dashboard: panels composed around one Session; generation runs on a worker thread.

Button clicks are not processed while a cell is busy, so the run happens off the kernel's
main thread: the UI stays responsive and Stop works. Generate is disabled during a run and a
second click while one is going starts nothing. Errors become a short message.
"""
from __future__ import annotations

import threading
import warnings
from importlib.metadata import PackageNotFoundError, version

import ipywidgets as W

from ..params import GenerationParams
from .actions import ImageActions
from .base import Panel, short_error
from .builder import PromptBuilder
from .controlnet import ControlPanel
from .explainer import ExplainerPanel
from .img2img import Img2ImgPanel
from .image_import import ImageImportPanel
from .live import LivePreview
from .logbrowser import LogPanel
from .lora import LoraPanel
from .maskcanvas import MaskCanvas
from .modes import ModesPanel
from .prompt import PromptPanel
from .scrubber import StepScrubber


TABS = ("Steps", "img2img", "ControlNet", "LoRA", "Log", "Explainer", "Hires / variation / detail", "Inpaint")


class Dashboard(Panel):
    """`Dashboard(session=None)`: None uses the kernel's default session (sdw.session())."""

    def __init__(self, session=None, *, prompt: str = "a red circle on a blue background", steps: int = 20,
                 min_interval: float = 0.1):
        super().__init__()
        check_ipykernel()
        if session is None:
            from ..session import session as default_session

            session = default_session()
        self.session = session
        self.prompt = PromptPanel(prompt=prompt, steps=steps)
        self.builder = PromptBuilder()
        self.live = LivePreview(min_interval=min_interval)
        self.scrubber = StepScrubber()
        self.actions = ImageActions()             # under the live preview: the last run's images
        self.img2img = Img2ImgPanel(image_source=self.last_image)
        self.controlnet = ControlPanel(image_source=self.last_image, session=session)
        self.lora = LoraPanel(session)
        self.log = LogPanel(session)
        self.explainer = ExplainerPanel(session, image_source=self.last_image)
        self.importer = ImageImportPanel(session)    # "load parameters from an image"
        self.modes = ModesPanel(session)
        self.inpaint = MaskCanvas(image_source=self.last_image)
        self.panels = [self.prompt, self.builder, self.live, self.actions, self.scrubber, self.img2img,
                       self.controlnet, self.lora, self.log, self.explainer, self.importer, self.modes, self.inpaint]
        self.last_run = None
        self.last_error: BaseException | None = None
        self.runs_started = 0
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._busy = False
        self._template: tuple[str, str, dict] | None = None

        self.on_click(self.prompt.generate, self._generate_clicked)
        self.on_click(self.prompt.stop, self._stop_clicked)
        self.observe(self.prompt.model, self._model_changed)
        self.builder.on_compose(self._composed)
        self.lora.on_release(self.regenerate)
        self.log.on_select(self.fill)
        self.log.on_rerun(self.rerun)
        for bar in (self.actions, self.log.actions):
            bar.on_img2img(self.send_to_img2img)
            bar.on_control(self.send_to_controlnet)
            bar.on_seed(self.reuse_seed)
        self.importer.on_params(self.prompt.fill)

        builder = W.Accordion(children=[self.builder.root], titles=("Prompt builder",))
        builder.selected_index = None
        self.tabs = tabs = W.Tab(children=[self.scrubber.root, self.img2img.root, self.controlnet.root,
                                           self.lora.root, self.log.root, self.explainer.root, self.modes.root,
                                           self.inpaint.root],
                                 titles=TABS)
        left = W.VBox([self.prompt.root, self.importer.root, builder], layout=W.Layout(flex="0 0 55%", min_width="520px",
                                                                   padding="0 8px 0 0"))
        right = W.VBox([self.live.root, self.actions.root], layout=W.Layout(flex="1 1 auto"))
        self.root = W.VBox([W.HBox([left, right]), tabs], layout=W.Layout(width="100%"))
        self.root.add_class("sdw-dashboard")
        self._extra_widgets = [builder, tabs, right]

    # ---- public -------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._busy

    def params(self) -> GenerationParams:
        """The GenerationParams the panels describe now (raises ParamError on bad input)."""
        # an inpainting mask brings its own image and strength, in place of img2img's
        return GenerationParams(**self.prompt.values(), **self.modes.values(), loras=self.lora.loras(),
                                controls=self.controlnet.controls(), **{**self.img2img.values(), **self.inpaint.values()})

    def fill(self, params: GenerationParams) -> None:
        """Every panel shows `params` (a log row's "To prompt"): Generate then makes the same run."""
        self.prompt.fill(params)
        self.modes.fill(params)
        self.lora.set_loras(params.loras)
        self.controlnet.set_controls(params.controls)
        if params.init_image is not None:
            self.img2img.set_image(params.init_image, params.strength)
        else:
            self.img2img.reset()

    def send_to_img2img(self, image) -> None:
        if self.img2img.set_image(image):
            self.tabs.selected_index = TABS.index("img2img")

    def send_to_controlnet(self, image) -> None:
        self.controlnet.add_control("canny", image)
        self.tabs.selected_index = TABS.index("ControlNet")

    def reuse_seed(self, seed: int) -> None:
        self.prompt.seed.value = seed
        self.prompt.random_seed.value = False

    def generate(self, params: GenerationParams | None = None, tags: dict | None = None) -> bool:
        """Start a run on the worker thread. Returns False (and starts nothing) if one is going."""
        if not self._start_lock.acquire(blocking=False):
            return False
        try:
            if self._busy:
                return False
            try:
                params = params if params is not None else self.params()
            except Exception as exc:  # noqa: BLE001 - ParamError above all: a message, never a dead widget
                self._show_error(exc)
                return False
            self._busy = True
            self.runs_started += 1
            self.last_error = None
            self.prompt.set_running(True)
            loading = not self.session.is_loaded(params.model)
            self.prompt.show("loading model (first run)…" if loading else "running…")
            self.live.start(params.steps, params.num_images, loading=loading)
            tags = {"source": "dashboard", **(tags if tags is not None else self._template_tags(params))}
            self._thread = threading.Thread(target=self._work, args=(params, tags), name="sdwidgets-dashboard",
                                            daemon=True)
            self._thread.start()
            return True
        finally:
            self._start_lock.release()

    def stop(self) -> None:
        """Interrupt the current run after the step in progress."""
        if self._busy:
            self.session.interrupt()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current run (if any) has finished; True if nothing is running anymore."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self._busy

    def rerun(self, run_id: str) -> bool:
        try:
            params = self.session.log.params(run_id)
        except Exception as exc:  # noqa: BLE001 - a message, never a dead widget
            self._show_error(exc)
            return False
        return self.generate(params, tags={"rerun_of": run_id})

    def regenerate(self) -> bool:
        """The last run's parameters with the LoRA panel's current strengths."""
        if self.last_run is None:
            return False
        return self.generate(self.last_run.params.replace(loras=self.lora.loras()))

    def _repr_mimebundle_(self, **kwargs):
        """The widget view, plus a static HTML line for front-ends without live widgets."""
        bundle = dict(self.root._repr_mimebundle_(**kwargs) or {})
        bundle.setdefault("text/html", "<p><b>sdwidgets dashboard</b>: open in Jupyter with a running kernel "
                                       "(ipywidgets) to use it.</p>")
        return bundle

    def last_image(self):
        return self.last_run.images[0] if self.last_run is not None and self.last_run.images else None

    def close(self) -> None:
        for panel in self.panels:
            panel.close()
        for widget in self._extra_widgets:
            widget.close()
        super().close()

    # ---- worker thread ---------------------------------------------------------------------------
    def _work(self, params: GenerationParams, tags: dict) -> None:
        run = None
        try:
            run = self.session.generate(params=params, tags=tags, on_step=self.live.on_step,
                                        decode_every=self.live.decode_every())
        except Exception as exc:  # noqa: BLE001 - failed runs are logged; here: a message
            self.last_error = exc
            self.live.fail(short_error(exc))
            self._show_error(exc)
        else:
            self.last_run = run
            self.live.finish(run)
            self.actions.show_run(run)
            self.scrubber.show_run(run)
            self.prompt.remember_seed(run.params.seed)
            kind = "ok" if run.status == "ok" else "error"
            self.prompt.show(f"{run.status}: {run.caption()}", kind)
        finally:
            try:
                self.log.refresh()
            except Exception as exc:  # noqa: BLE001 - a message, never a dead widget
                self._show_error(exc)
            self._busy = False
            self.prompt.set_running(False)

    # ---- handlers ------------------------------------------------------------------------------
    def _generate_clicked(self, _button) -> None:
        self.generate()

    def _stop_clicked(self, _button) -> None:
        self.stop()
        self.prompt.show("stopping after this step…")

    def _model_changed(self, change) -> None:
        model = change["new"].strip() or None
        self.lora.refresh(model)
        self.controlnet.set_model(model)

    def _composed(self, prompt: str, template: str, values: dict) -> None:
        self._template = (prompt, template, values) if template else None
        if template:
            self.prompt.prompt.value = prompt

    def _template_tags(self, params: GenerationParams) -> dict:
        """The builder's template and values, when the prompt is still what the builder composed."""
        if self._template and self._template[0] == params.prompt:
            return {"template": self._template[1], "values": self._template[2]}
        return {}

    def _show_error(self, exc: BaseException) -> None:
        self.prompt.show(short_error(exc), "error")


def check_ipykernel() -> None:
    """ipykernel 7.0.0 dropped widget updates sent from other threads (fixed in 7.1): say so."""
    try:
        if version("ipykernel") == "7.0.0":
            warnings.warn("ipykernel 7.0.0 does not deliver widget updates made on the generating thread; "
                          "the live preview will not update. Upgrade: pip install 'ipykernel>=7.1'", stacklevel=3)
    except PackageNotFoundError:
        pass
