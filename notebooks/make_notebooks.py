"""Writes the teaching notebooks (committed without outputs). Run: python notebooks/make_notebooks.py"""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent
KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}

NOTEBOOKS = {
    "01-quickstart.ipynb": [
        ("md", "# sdwidgets quickstart\n\nThe `%%sd` magic turns a cell into a prompt. This notebook runs on the "
               "embedded `shapes` model (64x64, a world of coloured shapes), so it works offline on a CPU."),
        ("code", "%load_ext sdwidgets"),
        ("md", "The cell body is the prompt. Watch the preview update every step; the caption gives the run id, "
               "seed, sampler, steps and time."),
        ("code", "%%sd --seed 1 --steps 20\na red circle on a blue background"),
        ("md", "`{name}` is filled from the notebook, and a sweep makes one run per value. The log keeps the "
               "template and the values."),
        ("code", "colour = \"yellow\""),
        ("code", "%%sd --sweep seed=1..4 --steps 20 --out squares\na {colour} square on a black background"),
        ("code", "len(squares), squares[0].params.prompt"),
        ("md", "Every image of every run is in the experiment log (a pandas DataFrame):"),
        ("code", "%sd log 5"),
        ("md", "## The same from Python\n`sdw.session()` is the session the magic uses: one pipeline per kernel."),
        ("code", "import sdwidgets as sdw\n\ns = sdw.session()\nrun = s.generate(\"a large green triangle on a "
                 "white background\", seed=7, steps=20, scheduler=\"DPM++ 2M Karras\")\nrun"),
        ("code", "from sdwidgets.images import grid, upscale\n\n# one preview per step: the predicted clean image\n"
                 "upscale(grid(run.frames[::2]), 512)"),
    ],
    "02-inside-a-run.ipynb": [
        ("md", "# Inside a run\n\nA diffusion run starts from noise and removes a little of it each step. "
               "sdwidgets records, for every step, a cheap linear preview of two things: the noisy latent "
               "x_t and the model's current guess of the clean image x0."),
        ("code", "import sdwidgets as sdw\nfrom sdwidgets.images import grid, upscale\n\n"
                 "s = sdw.session()\nrun = s.generate(\"a purple circle on the right on a white background\", "
                 "seed=3, steps=20, scheduler=\"Euler\", decode_every=5)"),
        ("code", "print(\"noisy latents x_t\")\ndisplay(upscale(grid(run.noisy_frames[::2]), 640))\n"
                 "print(\"predicted clean image x0\")\nupscale(grid(run.frames[::2]), 640)"),
        ("md", "The linear previews are nearly free; `decode_every=5` also decoded x0 with the VAE every 5 steps:"),
        ("code", "grid([run.decoded_frames[k] for k in sorted(run.decoded_frames)])"),
        ("code", "import pandas as pd\npd.DataFrame({\"step\": run.steps, \"timestep\": run.timesteps, "
                 "\"sigma\": run.sigmas}).head(8)"),
        ("md", "## Samplers and guidance\nThe same seed through different samplers, and guidance from 0 (the "
               "prompt is ignored) upwards. None of this reloads the model."),
        ("code", "%load_ext sdwidgets"),
        ("code", "%%sd --seed 5 --steps 20 --sweep sampler=\"Euler a\",\"DDIM\",\"DPM++ 2M Karras\",\"UniPC\"\n"
                 "a small orange square at the top on a blue background"),
        ("code", "%%sd --seed 5 --steps 20 --sweep cfg=0,1,3,5,8\na small orange square at the top on a blue background"),
        ("md", "## The forward process\n`x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps`: move the slider "
               "to see an image noised in latent space (decoded) beside the same noise in pixel space."),
        ("code", "from sdwidgets.widgets import ExplainerPanel\n\nexplainer = ExplainerPanel(s, image_source=lambda: "
                 "run.image)\nexplainer.source.value = \"last\"\nexplainer.show()\nexplainer"),
    ],
    "03-control-and-lora.ipynb": [
        ("md", "# ControlNet and LoRA\n\nThe embedded model comes with a `canny` ControlNet and a `ring` LoRA."),
        ("code", "import sdwidgets as sdw\nfrom PIL import Image, ImageDraw\n\ns = sdw.session()\n"
                 "drawing = Image.new(\"RGB\", (64, 64), \"white\")\n"
                 "ImageDraw.Draw(drawing).polygon([(40, 8), (60, 44), (20, 44)], fill=\"black\")\n"
                 "control = sdw.Control(\"canny\", drawing)\ncontrol.preview().resize((256, 256))"),
        ("md", "The conditioning image above is what the ControlNet sees (Canny edges of the drawing). "
               "The prompt chooses the colours; the edges choose the shape, size and position."),
        ("code", "s.generate(\"a green triangle on a yellow background\", seed=1, controls=[control])"),
        ("md", "## LoRA strength is a dial\n`sks` is the LoRA's trigger word; strength 0 is the base model."),
        ("code", "%load_ext sdwidgets"),
        ("code", "%%sd --seed 2 --sweep lora:ring=0,0.25,0.5,0.75,1\na red sks on a blue background"),
        ("md", "## Train your own LoRA\n`sdw.train_lora` fine-tunes LoRA layers (through peft) on a few images "
               "with a caption and saves a diffusers-format `.safetensors` file the Session loads back. "
               "A few steps here, to show the loop; see the model card for the recipe of `ring`."),
        ("code", "images = []\nfor x in (10, 24, 38):\n    im = Image.new(\"RGB\", (64, 64), (40, 80, 220))\n"
                 "    ImageDraw.Draw(im).rectangle([x, 20, x + 16, 44], fill=(245, 245, 245))\n    images.append(im)\n"
                 "path = sdw.train_lora(images, \"a white sks on a blue background\", steps=20, output=\"bars.safetensors\")\n"
                 "s.load_lora(path, \"bars\")\ns.generate(\"a white sks on a blue background\", seed=1, loras={\"bars\": 1.0})"),
    ],
    "04-reproduce-and-compare.ipynb": [
        ("md", "# Reproduce and compare\n\nEvery image is a row in the log, a PNG with its parameters, and a "
               "recipe that regenerates it bit for bit."),
        ("code", "import numpy as np\nimport sdwidgets as sdw\n\ns = sdw.session()\n"
                 "a = s.generate(\"a blue circle on the left on a white background\", seed=11, guidance_scale=3)\n"
                 "b = s.generate(\"a blue circle on the left on a white background\", seed=11, guidance_scale=7, "
                 "scheduler=\"Euler a\")\ns.log.df.tail(2)[[\"run_id\", \"seed\", \"guidance_scale\", \"scheduler\", "
                 "\"image_path\"]]"),
        ("code", "again = s.log.rerun(a.run_id)\nnp.array_equal(np.asarray(again.image), np.asarray(a.image))"),
        ("code", "s.log.compare([a.run_id, b.run_id])"),
        ("md", "The PNGs carry AUTOMATIC1111's `parameters` text, so other tools can read them, and we read "
               "them back:"),
        ("code", "from PIL import Image\nprint(Image.open(a.image_paths[0]).text[\"parameters\"])\n"
                 "sdw.GenerationParams.from_png(a.image_paths[0])"),
        ("md", "A new kernel (here: a new Session on the same folder) sees the whole log:"),
        ("code", "later = sdw.Session(log_dir=s.log.dir)\nlen(later.log) == len(s.log)"),
    ],
    "05-dashboard.ipynb": [
        ("md", "# The dashboard\n\nPrompt, live preview, step scrubber, ControlNet, LoRA, log and the "
               "diffusion explainer in one place. Generation runs in the background: Stop works."),
        ("code", "import sdwidgets as sdw\n\ndashboard = sdw.Dashboard()\ndashboard"),
    ],
    "06-evaluate.ipynb": [
        ("md", "# Answer a question with an evaluation\n\nWhich sampler and step count give the best prompt adherence "
               "for the time they take? Not by looking at four images: a fixed prompt set, a fixed metric, the same "
               "seeds for every setting, and error bars. On the embedded model the metric is exact: its analyser "
               "reads colour, shape, position and size off the pixels, and `adherence` is the fraction of what the "
               "prompt names that the image shows."),
        ("code", "import sdwidgets as sdw\n\ns = sdw.session()\ncolours = [\"red\", \"green\", \"blue\", \"yellow\", "
                 "\"purple\", \"orange\", \"white\", \"black\"]\n"
                 "prompts = sdw.PromptSet.from_template(\n    \"a {size} {color} {shape} {where} on a {bg} background\",\n"
                 "    {\"size\": [\"small\", \"large\"], \"color\": colours, \"shape\": [\"circle\", \"square\", "
                 "\"triangle\"],\n     \"where\": [\"on the left\", \"on the right\", \"at the top\", \"at the bottom\", "
                 "\"in the center\"], \"bg\": colours},\n    n=12, seed=0, name=\"shapes12\", distinct=[(\"color\", "
                 "\"bg\")])\nprint(prompts)\nlist(prompts)[:3]"),
        ("md", "The prompt set has a name and a content hash; both go into the log with every image it produces. "
               "The design: 2 samplers x 3 step counts x 12 prompts, one seed (more seeds: narrower intervals). "
               "Every image is a logged run, so an interrupted evaluation resumes where it stopped."),
        ("code", "ev = s.evaluate(prompts, grid={\"sampler\": [\"Euler\", \"DPM++ 2M Karras\"], \"steps\": [3, 8, 20]},\n"
                 "                seeds=[0], scorers=[\"adherence\", \"sharpness\"])\nev"),
        ("md", "`summary()` gives the mean of each score per configuration with a 95% bootstrap interval, and the "
               "seconds per image. Adherence per second is one line of pandas:"),
        ("code", "summary = ev.summary(\"adherence\")\nsummary.assign(adherence_per_s=summary.adherence / "
                 "summary.s_per_image).sort_values(\"adherence_per_s\", ascending=False)"),
        ("md", "Adherence per second favours the cheapest setting whatever it draws. The better question: what is "
               "the fastest configuration that cannot be told apart from the best one? A paired comparison (same "
               "prompts, same seeds) says plainly whether a difference is real or within noise:"),
        ("code", "print(ev.compare({\"steps\": 20, \"sampler\": \"Euler\"}, {\"steps\": 3, \"sampler\": \"Euler\"}, "
                 "score=\"adherence\"))\n"
                 "best = summary.sort_values(\"adherence\").iloc[-1]\nbest = {\"sampler\": best.scheduler, \"steps\": "
                 "best.steps}\nfor row in summary.sort_values(\"s_per_image\").itertuples():\n"
                 "    diff = ev.compare({\"sampler\": row.scheduler, \"steps\": row.steps}, best, score=\"adherence\")\n"
                 "    if diff.within_noise:\n        print(f\"fastest within noise of the best: {row.scheduler}, "
                 "{row.steps} steps, {row.s_per_image:.2f} s per image\")\n        print(diff)\n        break"),
        ("code", "%matplotlib inline\nev.plot(\"steps\", \"adherence\");"),
        ("code", "ev.frontier(\"adherence\");"),
        ("md", "The best and the worst images of each configuration, to see what the score punishes:"),
        ("code", "ev.best_worst(\"adherence\", k=3)"),
        ("md", "## From a cell\n`%%sd --eval SET` runs the same kind of design; the sweeps make the grid and the "
               "cell body names the scores. Everything here is already in the log, so nothing is generated again."),
        ("code", "%load_ext sdwidgets"),
        ("code", "%%sd --eval prompts --sweep steps=3,20 --sweep sampler=\"Euler\" --out again\nadherence"),
        ("code", "again.df.reused.all()"),
        ("md", "## Your own score\n`log.score(name, fn)` applies `fn(image, params) -> number` to every logged "
               "image that lacks it and stores it beside the log (`scores.jsonl`): it survives a restart and is "
               "never computed twice."),
        ("code", "import numpy as np\n\ns.log.score(\"brightness\", lambda image, params: float(np.asarray(image).mean()))\n"
                 "s.log.df[[\"prompt_set\", \"steps\", \"scheduler\", \"adherence\", \"brightness\"]].tail()"),
    ],
}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(metadata=KERNEL)
        nb.cells = [new_markdown_cell(src, id=f"c{i}") if kind == "md" else new_code_cell(src, id=f"c{i}")
                    for i, (kind, src) in enumerate(cells)]   # fixed ids: regenerating gives no diff
        nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    main()
