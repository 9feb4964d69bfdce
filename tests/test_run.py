"""What a Run says about itself: captions name what shaped the image; a stopped run's preview
is labelled as a preview, never as the result."""
from PIL import Image, ImageDraw

import sdwidgets as sdw


def drawing():
    im = Image.new("RGB", (64, 64), (40, 80, 220))
    ImageDraw.Draw(im).ellipse((12, 12, 52, 52), fill=(220, 40, 40))
    return im


def test_caption_names_negative_prompt_loras_controls_and_strength(session):
    plain = session.generate("a red circle", seed=1, steps=2)
    assert plain.shaped_by() == [] and plain.caption().endswith("s")          # nothing extra to say
    run = session.generate("a red sks on a blue background", negative_prompt="green, yellow", seed=1, steps=2,
                           loras={"ring": 0.8}, controls=[sdw.Control("canny", drawing(), scale=0.7)],
                           init_image=drawing(), strength=0.6)
    assert run.shaped_by() == ["negative: green, yellow", "LoRA ring 0.8", "canny control 0.7", "img2img strength 0.6"]
    caption = run.caption()
    assert caption.startswith(f"{run.run_id} · seed 1 · ") and caption.endswith("img2img strength 0.6")
    page = run._repr_html_()
    assert "LoRA ring 0.8" in page and "<details" in page and "negative prompt: green, yellow" in page


def test_a_run_stopped_before_its_image_shows_its_preview_as_a_preview(session):
    done = session.generate("a red circle", seed=1, steps=4)
    # Ctrl-C inside the pipeline (what the magic's interrupt raises) leaves frames but no image
    stopped = sdw.Run(run_id="r1", params=done.params, frames=done.frames[:3], steps=done.steps[:3],
                      status="interrupted", sampler=done.sampler)
    page = stopped._repr_html_()
    assert "last preview (step 3), not a result" in page and "INTERRUPTED" in page
    assert "not a result" not in done._repr_html_()
