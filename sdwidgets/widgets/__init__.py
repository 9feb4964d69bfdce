"""ipywidgets panels; each is usable alone and composed by `Dashboard`.

Panels talk to a Session (never to diffusers). Importing this package imports
ipywidgets but not torch.
"""
from .base import Panel
from .builder import PromptBuilder
from .controlnet import ControlPanel
from .dashboard import Dashboard
from .explainer import ExplainerPanel
from .live import LivePreview
from .logbrowser import LogPanel
from .lora import LoraPanel
from .prompt import PromptPanel
from .scrubber import StepScrubber

__all__ = ["ControlPanel", "Dashboard", "ExplainerPanel", "LivePreview", "LogPanel", "LoraPanel", "Panel",
           "PromptBuilder", "PromptPanel", "StepScrubber"]
