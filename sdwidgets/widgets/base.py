"""What every panel shares: a root widget to display, a close() that releases it, small helpers."""
from __future__ import annotations

import contextlib
import html

import ipywidgets as W

from ..images import png_bytes, upscale

PREVIEW_SIZE = 256      # tiny latent previews are upscaled (nearest) to about this size


class Panel:
    """A group of widgets with one `root` box. Display it like a widget; `close()` when done.

    Observers are registered through `observe()` with bound methods, so `close()` can remove
    them all and nothing long-lived holds a closure over a widget.
    """

    root: W.Widget

    def __init__(self):
        self._observed: list = []

    def observe(self, widget, handler, names="value"):
        widget.observe(handler, names=names)
        self._observed.append((widget, handler, names))

    def on_click(self, button, handler):
        button.on_click(handler)
        self._observed.append((button, handler, None))

    def close(self) -> None:
        for widget, handler, names in self._observed:
            if names is None:
                widget.on_click(handler, remove=True)
            else:
                widget.unobserve(handler, names=names)
        self._observed.clear()
        close_tree(self.root)

    def _repr_mimebundle_(self, **kwargs):
        return self.root._repr_mimebundle_(**kwargs)


@contextlib.contextmanager
def hold(*widgets):
    """Batch each widget's trait changes into one message per widget (hold_sync is per widget)."""
    with contextlib.ExitStack() as stack:
        for widget in widgets:
            stack.enter_context(widget.hold_sync())
        yield


def close_tree(widget) -> None:
    """Close a widget, every widget inside it, and their Layout and Style models."""
    for child in getattr(widget, "children", ()) or ():
        close_tree(child)
    for part in ("layout", "style"):
        model = getattr(widget, part, None)
        if isinstance(model, W.Widget):
            model.close()
    widget.close()


def image_value(image, size: int = PREVIEW_SIZE) -> bytes:
    """PNG bytes for an ipywidgets.Image; tiny images upscaled with NEAREST so pixels stay sharp."""
    return png_bytes(upscale(image.convert("RGB"), size))


def blank_png() -> bytes:
    """A light grey placeholder (an Image with no value shows as a broken image in the browser)."""
    from PIL import Image

    return png_bytes(Image.new("RGB", (1, 1), (238, 238, 238)))


def image_widget(size: int = PREVIEW_SIZE) -> W.Image:
    return W.Image(value=blank_png(), format="png", width=size, height=size)


def message(text: str, kind: str = "info") -> str:
    """HTML for a one-line status message (escaped)."""
    color = {"error": "#b00020", "ok": "#1b5e20", "info": "#555"}[kind]
    return f'<span style="color:{color};font-size:12px">{html.escape(text)}</span>'


def short_error(exc: BaseException, limit: int = 300) -> str:
    text = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
    text = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ImageInput:
    """The path box and "use last result" button of a panel that takes an image (init or control).

    The panel has `path` (Text), `status` (HTML), `image_source` (callable or None) and `set_image`.
    """

    def _load_clicked(self, _button) -> None:
        text = self.path.value.strip()
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None and text.isidentifier() and text in shell.user_ns:
            self.set_image(shell.user_ns[text])     # a notebook variable holding an image
        else:
            self.set_image(text)

    def _use_last_clicked(self, _button) -> None:
        image = self.image_source() if self.image_source is not None else None
        if image is None:
            self.status.value = message("no generated image yet", "error")
        else:
            self.set_image(image)
