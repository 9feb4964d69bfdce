"""Batched images (one pipeline call, one generator per image), a pipeline left as found,
previews copied without waiting for the device, and weight hashing off the first load."""
import gc
import json
import threading

import numpy as np
import pytest
import torch
from conftest import pixels

import sdwidgets as sdw
from sdwidgets.errors import ParamError
from sdwidgets.hostcopy import PendingCopies
from sdwidgets.preview import StepRecorder


def test_a_batched_run_is_one_call_per_batch_and_its_layout_is_logged(session):
    calls = []
    pipe = session.pipeline()
    session.generate("a circle", seed=1, steps=2)        # loaded before counting calls
    original_call = type(pipe).__call__

    def counting(self, *args, **kwargs):
        calls.append(kwargs["num_images_per_prompt"])
        return original_call(self, *args, **kwargs)

    type(pipe).__call__ = counting
    try:
        run = session.generate("a red circle", seed=40, steps=3, num_images=5, batch_size=2)
    finally:
        type(pipe).__call__ = original_call
    assert calls == [2, 2, 1] and len(run.images) == 5 and run.seeds == [40, 41, 42, 43, 44]
    rows = session.log.df.query(f"run_id == '{run.run_id}'")
    assert list(rows["batch_index"]) == [0, 0, 1, 1, 2] and list(rows["batch_size"]) == [2, 2, 2, 2, 1]
    assert rows.iloc[0]["params"]["batch_size"] == 2


def test_batched_images_match_lone_ones_and_a_rerun_is_bit_identical(session):
    batch = session.generate("a blue square on a yellow background", seed=11, steps=5, num_images=4,
                             scheduler="Euler a")     # ancestral: noise drawn per step from each generator
    for i in (0, 3):
        alone = session.log.rerun(batch.run_id, image_index=i)
        assert alone.params.seed == 11 + i
        assert np.abs(pixels(alone.image) - pixels(batch.images[i])).max() <= 1   # within 1/255
    again = session.log.rerun(batch.run_id)
    assert again.params.batches == [4]
    for a, b in zip(again.images, batch.images):
        assert np.array_equal(pixels(a), pixels(b))


def test_batch_size_is_validated_and_old_records_keep_one_image_per_call(session):
    with pytest.raises(ParamError, match="batch_size must be >= 1"):
        session.generate("a circle", num_images=2, batch_size=0)
    with pytest.raises(ParamError, match="batch_size must be an integer"):
        session.generate("a circle", num_images=2, batch_size="4")
    assert len(session.log) == 0
    old = sdw.GenerationParams(prompt="x", num_images=3).to_dict()
    del old["batch_size"]                                   # a record from before batching
    assert sdw.GenerationParams.from_dict(old).batches == [1, 1, 1]
    assert sdw.GenerationParams(prompt="x", num_images=3).batches == [3]


def test_preview_frames_of_a_batch_are_complete_ordered_and_side_by_side(session):
    seen = []
    run = session.generate("a red circle", seed=2, steps=6, num_images=3, batch_size=2, scheduler="Euler",
                           on_step=lambda r: seen.append((r.image_index, r.batch_count)))
    assert len(run.frames) == len(run.noisy_frames) == 6 and run.steps == list(range(1, 7))
    width = run.images[0].width                        # frames come at the output size
    assert run.frames[0].width == 3 * width            # the three images side by side
    assert seen == [(0, 2)] * 6 + [(2, 1)] * 6
    alone = session.generate("a red circle", seed=4, steps=6, scheduler="Euler")
    # image 2 (seed 4, a batch of one) has the same previews as a lone run with its seed
    for step in (0, 5):
        assert np.array_equal(pixels(run.frames[step])[:, 2 * width:], pixels(alone.frames[step]))
    assert all(isinstance(t, float) for t in run.timesteps) and run.timesteps == sorted(run.timesteps, reverse=True)


def test_the_loaded_pipeline_is_left_as_found_and_keeps_no_frames(session):
    pipe = session.pipeline()
    scheduler, step = pipe.scheduler, pipe.scheduler.step
    run = session.generate("a circle", seed=3, steps=4, num_images=2, scheduler="DPM++ 2M Karras")
    assert run.sampler == "DPM++ 2M Karras" and len(run.frames) == 4
    assert pipe.scheduler is scheduler and pipe.scheduler.step == step
    assert "step" not in vars(pipe.scheduler)              # not wrapped by a recorder
    del run
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, StepRecorder)]   # nothing keeps the recorder


def test_without_previews_or_listeners_the_step_is_not_wrapped(session):
    wrapped = []
    original = StepRecorder.start_batch

    def spy(self, first, count, scheduler):
        out = original(self, first, count, scheduler)
        wrapped.append("step" in vars(out))
        return out

    StepRecorder.start_batch = spy
    try:
        quiet = session.generate("a circle", seed=5, steps=3, preview="none")
        full = session.generate("a circle", seed=5, steps=3)
    finally:
        StepRecorder.start_batch = original
    assert wrapped == [False, True]
    assert quiet.frames == [] and quiet.preview_seconds == 0.0 and len(quiet.step_times) == 3
    assert np.array_equal(pixels(quiet.image), pixels(full.image))


def test_pending_copies_resolve_at_once_on_the_cpu_in_order():
    # On a GPU a copy stays in flight for one step (behind a CUDA event); on the CPU there is
    # nothing to wait for, so a live view gets every step's preview at that step.
    copies = PendingCopies()
    frames, timesteps = [], [None, None]
    for k in range(3):
        rgb8 = torch.full((1, 2, 2, 3), k, dtype=torch.uint8)
        timesteps[min(k, 1)] = torch.tensor(900.0 - k)
        copies.submit(rgb8, [frames], [(timesteps, min(k, 1), timesteps[min(k, 1)])])
        assert len(frames) == k + 1 and not copies.busy
    copies.resolve()
    assert [f.getpixel((0, 0)) for f in frames] == [(0, 0, 0), (1, 1, 1), (2, 2, 2)]
    assert timesteps == [900.0, 898.0]


def test_live_listeners_on_the_cpu_see_every_steps_preview_at_that_step(session):
    shown = []
    session.generate("a circle", seed=6, steps=4, on_step=lambda r: shown.append(len(r.frames)))
    assert shown == [1, 2, 3, 4]


def test_first_load_does_not_wait_for_weight_hashing_and_the_row_has_the_hash(tmp_path, model, monkeypatch):
    from sdwidgets import models

    expected = models.weights_hash(models.resolve(model))
    monkeypatch.setenv("SDWIDGETS_CACHE", str(tmp_path / "cache"))     # no cached file hashes
    gate, real = threading.Event(), models.file_sha256
    monkeypatch.setattr(models, "file_sha256", lambda path: gate.wait(60) and real(path))
    s = sdw.Session(log_dir=tmp_path / "runs", model=model, progress=False)
    s.pipeline()                          # returns while every file hash is still held back
    assert not s._load(s.resolve()).hash_ready
    gate.set()
    s.generate("a circle", seed=1, steps=2)
    row = json.loads((tmp_path / "runs" / "records.jsonl").read_text().splitlines()[-1])
    assert row["model_hash"] == expected and len(expected) == 64
