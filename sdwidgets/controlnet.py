"""ControlNet conditioning: `Control(kind, image)` and the preprocessors (controlnet-aux).

`Control.preview()` runs only the preprocessor, so widgets can show the conditioning
image while its parameters move, before anything is generated.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from .errors import MissingExtraError, MissingWeightsError, ParamError
from .validate import check_number, load_image

# kind -> (controlnet_aux detector (canny: OpenCV, see run_preprocessor), needs annotator weights from the hub, options and defaults)
PREPROCESSORS: dict[str, tuple[str, bool, dict]] = {
    "canny": ("CannyDetector", False, {"low_threshold": 100, "high_threshold": 200}),
    "shuffle": ("ContentShuffleDetector", False, {}),
    "depth": ("MidasDetector", True, {}),
    "openpose": ("OpenposeDetector", True, {}),
    "lineart": ("LineartDetector", True, {}),
    "hed": ("HEDdetector", True, {}),
    "mlsd": ("MLSDdetector", True, {}),
    "normal": ("NormalBaeDetector", True, {}),
}
# ControlNet checkpoints per (model family, kind) for users with a network (families.detect names the family).
HUB_CONTROLNETS = {
    ("sd1", "canny"): "lllyasviel/control_v11p_sd15_canny",
    ("sd1", "depth"): "lllyasviel/control_v11f1p_sd15_depth",
    ("sd1", "openpose"): "lllyasviel/control_v11p_sd15_openpose",
    ("sd1", "lineart"): "lllyasviel/control_v11p_sd15_lineart",
    ("sd1", "hed"): "lllyasviel/control_v11p_sd15_softedge",
    ("sd1", "mlsd"): "lllyasviel/control_v11p_sd15_mlsd",
    ("sd1", "normal"): "lllyasviel/control_v11p_sd15_normalbae",
    ("sd1", "shuffle"): "lllyasviel/control_v11e_sd15_shuffle",
    ("sdxl", "canny"): "diffusers/controlnet-canny-sdxl-1.0",
    ("sdxl", "depth"): "diffusers/controlnet-depth-sdxl-1.0",
}
ANNOTATORS_REPO = "lllyasviel/Annotators"


@dataclass(eq=False)
class Control:
    """One ControlNet condition. `image` is a PIL image, array or path.

    A plain picture goes through the kind's preprocessor; pass `preprocess=False`
    (or an edge map: black and white only, detected automatically) to use it as is.
    `options` are the preprocessor's parameters, e.g. low_threshold/high_threshold for canny,
    given as keywords or as a dict; `dataclasses.replace(control, scale=0.5)` works.
    """

    kind: str
    image: Any
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0
    preprocess: bool | None = None      # None: automatic
    options: dict = field(default_factory=dict)

    def __init__(self, kind, image, scale=1.0, start=0.0, end=1.0, preprocess=None, options=None, **more_options):
        # preprocessor options as a dict (what dataclasses.replace passes) or as keywords
        options = {**(options or {}), **more_options}
        if kind not in PREPROCESSORS:
            raise ParamError(f"controls: unknown kind {kind!r}; choose one of: {', '.join(PREPROCESSORS)}")
        self.kind = kind
        self.image = load_image(image, f"controls[{kind}].image")
        self.scale = check_number(f"controls[{kind}].scale", scale, 0.0, 5.0)
        self.start = check_number(f"controls[{kind}].start", start, 0.0, 1.0)
        self.end = check_number(f"controls[{kind}].end", end, 0.0, 1.0)
        if self.start >= self.end:
            raise ParamError(f"controls[{kind}]: start ({start}) must be below end ({end})")
        unknown = set(options) - set(PREPROCESSORS[kind][2])
        if unknown:
            accepted = ", ".join(PREPROCESSORS[kind][2]) or "none"
            raise ParamError(f"controls[{kind}]: unknown option(s) {', '.join(sorted(unknown))}; accepted: {accepted}")
        self.options = {**PREPROCESSORS[kind][2], **options}
        self.preprocess = preprocess
        self._cache = {}

    def needs_preprocessing(self) -> bool:
        if self.preprocess is not None:
            return self.preprocess
        return not (self.kind == "canny" and _looks_like_edge_map(self.image))

    def preview(self, size: tuple[int, int] | None = None):
        """The conditioning image the ControlNet will see (at `size` = (width, height), or the image's size)."""
        size = tuple(size) if size else self.image.size
        key = (size, tuple(sorted(self.options.items())))
        if key not in self._cache:
            image = self.image.resize(size) if self.image.size != size else self.image
            self._cache = {key: run_preprocessor(self.kind, image, self.options) if self.needs_preprocessing() else image}
        return self._cache[key]

    def to_dict(self) -> dict:
        from .images import image_sha256

        return {"kind": self.kind, "scale": self.scale, "start": self.start, "end": self.end,
                "preprocess": self.preprocess, "options": self.options, "image_sha256": image_sha256(self.image)}

    @classmethod
    def from_dict(cls, data: dict, images: dict) -> "Control":
        sha = data["image_sha256"]
        if sha not in images:
            raise ParamError(f"controls[{data['kind']}]: image {sha[:12]} is not stored with this record")
        return cls(data["kind"], images[sha], scale=data["scale"], start=data["start"], end=data["end"],
                   preprocess=data.get("preprocess"), **data.get("options", {}))

    def __repr__(self) -> str:
        return f"Control({self.kind!r}, image={self.image.size}, scale={self.scale:g}, start={self.start:g}, end={self.end:g})"


def _looks_like_edge_map(image) -> bool:
    """Black-and-white and mostly black: already an edge map, don't run canny on it again."""
    import numpy as np

    gray = np.asarray(image.convert("L"))
    extreme = np.mean((gray < 16) | (gray > 239))
    return extreme > 0.99 and np.mean(gray > 127) < 0.5


_DETECTORS: dict = {}


def run_preprocessor(kind: str, image, options: dict):
    """The conditioning image for `kind` at the image's own resolution.

    canny is OpenCV's (a core dependency: it conditions the embedded model's ControlNet);
    the other kinds use controlnet-aux's detectors (the `annotators` extra).
    """
    if kind == "canny":
        return canny(image, **options)
    detector = _detector(kind)
    size = image.size
    out = detector(image, detect_resolution=min(size), image_resolution=min(size), output_type="pil", **options)
    return out.resize(size) if out.size != size else out


def canny(image, low_threshold: int = 100, high_threshold: int = 200):
    """Canny edges as an RGB image (white edges on black), what canny ControlNets were trained on."""
    import cv2
    import numpy as np
    from PIL import Image

    edges = cv2.Canny(np.asarray(image.convert("RGB")), low_threshold, high_threshold)
    return Image.fromarray(edges).convert("RGB")


def _detector(kind: str):
    if kind not in _DETECTORS:
        cls_name, needs_weights, _ = PREPROCESSORS[kind]
        with warnings.catch_warnings():   # controlnet_aux imports optional extras noisily
            warnings.simplefilter("ignore")
            try:
                import controlnet_aux
            except ImportError:
                raise MissingExtraError(f"controls: the {kind!r} preprocessor needs controlnet-aux; "
                                        "install it with `pip install 'sdwidgets[annotators]'` "
                                        "(or pass preprocess=False with a ready conditioning image)") from None

            cls = getattr(controlnet_aux, cls_name)
        _DETECTORS[kind] = _with_annotator_weights(kind, cls) if needs_weights else cls()
    return _DETECTORS[kind]


def _with_annotator_weights(kind: str, cls):
    """The detector from annotator weights in the local Hugging Face cache, or downloaded once
    (said first). Offline, or with the hub unreachable, a clear error at once instead of the
    hub client's retries (about 25 s)."""
    from huggingface_hub import constants

    try:
        return cls.from_pretrained(ANNOTATORS_REPO, local_files_only=True)
    except OSError:           # not in the cache (LocalEntryNotFoundError is an OSError)
        pass
    how = (f"download them once with `huggingface-cli download {ANNOTATORS_REPO}` on a machine with a network, "
           f"or pass preprocess=False with a ready {kind} map")
    if constants.is_offline_mode() or not _reachable(constants.ENDPOINT):
        raise MissingWeightsError(f"controls: the {kind!r} preprocessor needs annotator weights from "
                                  f"{ANNOTATORS_REPO}, which are not on this machine and cannot be fetched now; {how}")
    warnings.warn(f"controls: downloading annotator weights for {kind!r} from {ANNOTATORS_REPO} (first use only)",
                  stacklevel=4)
    try:
        return cls.from_pretrained(ANNOTATORS_REPO)
    except OSError as exc:
        raise MissingWeightsError(f"controls: could not download the {kind!r} annotator weights ({exc}); {how}") from None


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the host of `url` answers a TCP connection within `timeout` seconds."""
    import socket
    from urllib.parse import urlparse

    parts = urlparse(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout):
            return True
    except OSError:
        return False

