"""The codebase's own promises: no import cycles, a light import, installable beside any torch,
optional parts that say which extra to install."""
from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

import sdwidgets as sdw

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sdwidgets"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the sdwidgets modules it imports, at top level or inside functions alike."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
                targets = submodules or [target]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_inside_the_package():
    graph = import_graph()
    assert "sdwidgets.params" in graph["sdwidgets.session"] or "sdwidgets.params" in graph.get("sdwidgets.sessions", ())
    assert cycles(graph) == []


def test_torch_is_declared_as_a_range_and_pinned_only_in_constraints():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch = [d for d in project["dependencies"] if d.split(">")[0].split("=")[0].strip() == "torch"]
    assert torch and "==" not in torch[0], torch          # a user's CUDA build is kept
    assert not any(d.startswith("torchvision") for d in project["dependencies"])
    pins = (ROOT / "constraints.txt").read_text()
    assert "torch==" in pins and "torchvision==" in pins
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    test_command = next(line for line in readme.splitlines() if "pytest" in line and "pip install" in line)
    assert "-c constraints.txt" in test_command and test_command in ci


def _drawing():
    im = Image.new("RGB", (64, 64), (40, 80, 220))
    ImageDraw.Draw(im).ellipse((12, 12, 52, 52), fill=(220, 40, 40))
    return im


def test_canny_needs_no_extra_and_other_kinds_name_the_extra(tmp_path):
    _drawing().save(tmp_path / "drawing.png")
    code = f"""
import sys
sys.modules["controlnet_aux"] = None          # as if the annotators extra were not installed
import numpy as np
import sdwidgets as sdw
edges = np.asarray(sdw.Control("canny", {str(tmp_path / "drawing.png")!r}).preview())
print("edges", int((edges > 0).any(axis=2).sum()))
try:
    sdw.Control("shuffle", {str(tmp_path / "drawing.png")!r}).preview()
except ImportError as exc:
    print("error", exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out.split("edges ")[1].split()[0]) > 50       # the circle's outline
    assert "sdwidgets[annotators]" in out and "'shuffle'" in out


def test_canny_preview_matches_controlnet_aux_on_the_embedded_size():
    pytest.importorskip("controlnet_aux")
    import numpy as np
    from controlnet_aux import CannyDetector

    ours = np.asarray(sdw.Control("canny", _drawing()).preview())
    theirs = np.asarray(CannyDetector()(_drawing(), detect_resolution=64, image_resolution=64, output_type="pil"))
    assert ours.any() and np.array_equal(ours, theirs)       # what the embedded ControlNet was trained on


def test_control_behaves_like_the_dataclass_it_is():
    control = sdw.Control("canny", _drawing(), scale=0.8, low_threshold=50)
    half = dataclasses.replace(control, scale=0.5)
    assert (half.scale, half.options, half.kind) == (0.5, {"low_threshold": 50, "high_threshold": 200}, "canny")
    assert control.scale == 0.8
    with pytest.raises(sdw.ParamError, match="scale"):
        dataclasses.replace(control, scale=9.0)


def test_a_preprocessor_without_its_weights_says_how_to_get_them_instead_of_retrying(tmp_path):
    pytest.importorskip("controlnet_aux")
    code = """
import sdwidgets as sdw
from PIL import Image
try:
    sdw.Control("depth", Image.new("RGB", (64, 64))).preview()
except sdw.SDWidgetsError as exc:
    print(type(exc).__name__, exc)
"""
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}   # an empty cache
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout
    assert out.startswith("MissingWeightsError controls: the 'depth' preprocessor needs annotator weights")
    assert "huggingface-cli download lllyasviel/Annotators" in out and "preprocess=False" in out
    assert not any((tmp_path / "hf").rglob("*.pt"))
