"""`sdwidgets` on the command line: demo, generate, log, rerun, train."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEMO_PROMPTS = [
    "a red circle on a blue background",
    "a large yellow triangle at the top on a black background",
    "a small green square on the left on a white background",
    "a purple circle in the center on an orange background",
]


def main(argv: list[str] | None = None) -> int:
    from .magic_parse import add_mode_arguments

    parser = argparse.ArgumentParser(prog="sdwidgets", description="Stable Diffusion sessions with a reproducible log")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="generate with the embedded model: previews, samplers, LoRA, ControlNet, rerun")
    demo.add_argument("--out", default="sdwidgets-demo", help="folder for the log and the contact sheet")
    demo.add_argument("--steps", type=int, default=20)

    gen = sub.add_parser("generate", help="generate images and log them")
    gen.add_argument("prompt")
    gen.add_argument("--negative", default="")
    gen.add_argument("--seed", type=int)
    gen.add_argument("--steps", type=int, default=20)
    gen.add_argument("--cfg", type=float, default=5.0)
    gen.add_argument("--size", help="WxH")
    gen.add_argument("--sampler")
    gen.add_argument("-n", "--num-images", type=int, default=1)
    gen.add_argument("--batch-size", type=int, default=None, help="images per pipeline call (default: all)")
    gen.add_argument("--model")
    gen.add_argument("--lora", action="append", default=[], metavar="NAME[:STRENGTH]")
    gen.add_argument("--control", action="append", default=[], metavar="KIND:IMAGE[:SCALE]")
    gen.add_argument("--init", metavar="IMAGE")
    gen.add_argument("--strength", type=float)
    add_mode_arguments(gen.add_argument)     # --mask, --hires, --denoise, --subseed, --prompt-syntax, ...
    gen.add_argument("--log-dir", default="sd-runs")

    log = sub.add_parser("log", help="show the last runs of a log folder")
    log.add_argument("-n", type=int, default=10)
    log.add_argument("--log-dir", default="sd-runs")

    rerun = sub.add_parser("rerun", help="regenerate a logged run (same parameters and seed)")
    rerun.add_argument("run_id")
    rerun.add_argument("--log-dir", default="sd-runs")

    sub.add_parser("train", help="retrain the embedded model, one stage or all (see `sdwidgets train --help`)",
                   add_help=False)

    if argv is None:
        argv = sys.argv[1:]
    import warnings

    from .errors import SDWidgetsError

    warnings.formatwarning = _one_line_warning
    try:
        if argv[:1] == ["train"]:
            return run_train(argv[1:])
        args = parser.parse_args(argv)
        return {"demo": run_demo, "generate": run_generate, "log": show_log, "rerun": run_rerun}[args.command](args)
    except (SDWidgetsError, KeyError) as exc:     # a user's mistake: one line, no traceback
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def _recipe_stages() -> tuple[list[str], str]:
    """(stage names, their help block) from the recipe's docstring, read without importing torch."""
    import ast
    import re

    source = Path(__file__).parent / "training" / "shapes.py"
    doc = ast.get_docstring(ast.parse(source.read_text())) or ""
    block = doc[doc.index("Stages"):doc.index("Working files")].strip() if "Stages" in doc else ""
    return re.findall(r"^ {4}([\w-]+) {2,}", block, flags=re.M), block


def train_parser() -> argparse.ArgumentParser:
    """`sdwidgets train STAGE --out DIR`."""
    _, stages = _recipe_stages()
    p = argparse.ArgumentParser(
        prog="sdwidgets train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Retrain the embedded `shapes` model (all: about 2 hours on a 2-core CPU). Both the stage and "
                    "an output folder are required, so nothing overwrites the installed model by accident.",
        epilog=stages + "\n\nThe trained model goes to OUT/shapes, working files to OUT/work (resumable).")
    p.add_argument("stage", help="a stage name below, or `all`")
    p.add_argument("--out", required=True, type=Path, help="folder for the trained model and the working files")
    return p


def run_train(argv: list[str]) -> int:
    import os
    import subprocess

    from .errors import ParamError

    parser = train_parser()
    if not argv:
        parser.print_usage(sys.stderr)
        print("error: name a stage (or `all`, about 2 hours) and --out DIR; `sdwidgets train --help` lists them",
              file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    names, _ = _recipe_stages()
    if args.stage != "all" and args.stage not in names:
        raise ParamError(f"unknown stage {args.stage!r}; choose from all, {', '.join(names)}")
    out = args.out.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ParamError(f"--out {str(out)!r} is a file, not a folder")
    # the recipe reads its paths from the environment when imported: a child process gets them
    env = {**os.environ, "SDW_TRAIN_WORK": str(out / "work"), "SDW_ASSET_DIR": str(out / "shapes")}
    return subprocess.call([sys.executable, "-m", "sdwidgets.training.shapes", args.stage], env=env)


def run_generate(args) -> int:
    from .magic_parse import mode_options, parse_control, parse_lora
    from .session import Session
    from .sweep import parse_size

    width, height = parse_size(args.size) if args.size else (None, None)
    s = Session(log_dir=args.log_dir, model=args.model)
    run = s.generate(args.prompt, negative_prompt=args.negative, seed=args.seed, steps=args.steps,
                     guidance_scale=args.cfg, width=width, height=height, scheduler=args.sampler,
                     num_images=args.num_images, batch_size=args.batch_size, loras=dict(parse_lora(t) for t in args.lora),
                     controls=[parse_control(t, {}) for t in args.control], init_image=args.init,
                     strength=args.strength, tags={"source": "cli"}, **mode_options(args, {}))
    print(run.caption())
    for path in run.image_paths:
        print(path)
    return 130 if run.status == "interrupted" else 0    # Ctrl-C mid-run: logged as interrupted


def _existing_log(log_dir):
    from .errors import ParamError
    from .log import RECORDS, ExperimentLog

    path = Path(log_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ParamError(f"--log-dir {str(path)!r} is a file, not a log folder")
    if not (path / RECORDS).is_file():
        raise ParamError(f"--log-dir {str(path)!r} holds no log ({RECORDS}); generate something first")
    return ExperimentLog(path)


def show_log(args) -> int:
    df = _existing_log(args.log_dir).df
    cols = ["run_id", "image_index", "status", "prompt", "seed", "steps", "guidance_scale", "scheduler", "duration_s"]
    print(df[cols].tail(args.n).to_string(index=False) if len(df) else f"no runs in {args.log_dir}")
    return 0


def run_rerun(args) -> int:
    from .session import Session

    _existing_log(args.log_dir)
    s = Session(log_dir=args.log_dir)
    run = s.log.rerun(args.run_id)
    df = s.log.df      # boolean masks, not DataFrame.query: a run id is text, never an expression
    same = [a == b for a, b in zip(df[df["run_id"] == args.run_id]["image_sha256"],
                                   df[df["run_id"] == run.run_id]["image_sha256"])]
    print(run.caption(), "· identical to the original" if same and all(same) else "· differs from the original")
    return 130 if run.status == "interrupted" else 0


def run_demo(args) -> int:
    """A tour on the embedded model; writes a contact sheet of step previews and final images."""
    import numpy as np
    from PIL import Image, ImageDraw
    from tqdm.auto import tqdm

    from .controlnet import Control
    from .images import grid, upscale
    from .session import Session

    out = Path(args.out)
    s = Session(log_dir=out / "runs", progress=False)     # one progress bar for the whole tour
    print(f"sdwidgets demo · model {s.resolve().name!r} · log {s.log.dir}")
    edges = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(edges).rectangle([8, 30, 30, 52], outline="white")
    jobs = [(p, dict(prompt=p, seed=i)) for i, p in enumerate(DEMO_PROMPTS)]
    jobs += [(f"{DEMO_PROMPTS[0]} · {name}", dict(prompt=DEMO_PROMPTS[0], seed=0, scheduler=name))
             for name in ("Euler a", "DPM++ 2M Karras")]
    if "ring" in s.loras():
        jobs += [(f"a red sks on a blue background · ring {w}",
                  dict(prompt="a red sks on a blue background", seed=3, loras={"ring": w})) for w in (0.0, 0.5, 1.0)]
    if s.controlnet_source("canny"):
        jobs.append(("ControlNet canny: a square at the bottom left",
                     dict(prompt="a blue square on a yellow background", seed=4, controls=[Control("canny", edges)])))
    rows, runs = [], []
    for label, kwargs in tqdm(jobs, desc="demo runs"):
        run = s.generate(steps=args.steps, tags={"source": "demo"}, **kwargs)
        runs.append(run)
        tqdm.write(f"  {label:<52} {run.caption()}")
        frames = run.frames[:: max(1, len(run.frames) // 8)][:8]
        rows.append([upscale(f, 64).resize((64, 64)) for f in frames] + [im.resize((64, 64)) for im in run.images])
    again = s.log.rerun(runs[0].run_id)
    same = np.array_equal(np.asarray(again.image), np.asarray(runs[0].image))
    print(f"  rerun {runs[0].run_id}: {'bit-identical' if same else 'DIFFERENT'}")
    width = max(len(r) for r in rows)
    blank = Image.new("RGB", (64, 64), "white")
    grid([im for r in rows for im in r + [blank] * (width - len(r))], cols=width).save(out / "demo.png")
    print(f"{len(s.log)} images in the log {s.log.dir}; contact sheet (step previews -> image): {out / 'demo.png'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
