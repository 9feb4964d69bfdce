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
from .base import Panel, short_error
from .builder import PromptBuilder
from .controlnet import ControlPanel
from .explainer import ExplainerPanel
from .live import LivePreview
from .logbrowser import LogPanel
from .lora import LoraPanel
from .maskcanvas import MaskCanvas
from .modes import ModesPanel
from .prompt import PromptPanel
from .scrubber import StepScrubber


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
        self.controlnet = ControlPanel(image_source=self.last_image, session=session)
        self.lora = LoraPanel(session)
        self.log = LogPanel(session)
        self.explainer = ExplainerPanel(session, image_source=self.last_image)
        self.modes = ModesPanel(session)
        self.inpaint = MaskCanvas(image_source=self.last_image)
        self.panels = [self.prompt, self.builder, self.live, self.scrubber, self.controlnet, self.lora, self.log,
                       self.explainer, self.modes, self.inpaint]
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
        self.log.on_select(self.prompt.fill)
        self.log.on_select(self.modes.fill)
        self.log.on_rerun(self.rerun)

        builder = W.Accordion(children=[self.builder.root], titles=("Prompt builder",))
        builder.selected_index = None
        tabs = W.Tab(children=[self.scrubber.root, self.controlnet.root, self.lora.root, self.log.root,
                               self.explainer.root, self.modes.root, self.inpaint.root],
                     titles=("Steps", "ControlNet", "LoRA", "Log", "Explainer", "Hires / variation / detail", "Inpaint"))
        left = W.VBox([self.prompt.root, builder], layout=W.Layout(flex="0 0 55%", min_width="520px",
                                                                   padding="0 8px 0 0"))
        self.live.root.layout.flex = "1 1 auto"
        self.root = W.VBox([W.HBox([left, self.live.root]), tabs], layout=W.Layout(width="100%"))
        self.root.add_class("sdw-dashboard")
        self._extra_widgets = [builder, tabs]

    # ---- public -------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._busy

    def params(self) -> GenerationParams:
        """The GenerationParams the panels describe now (raises ParamError on bad input)."""
        return GenerationParams(**self.prompt.values(), **self.modes.values(), **self.inpaint.values(),
                                loras=self.lora.loras(),
                                controls=self.controlnet.controls())

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
            self.prompt.show("running…")
            self.live.start(params.steps, params.num_images)
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
