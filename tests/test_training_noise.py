"""How training samples are noised (sdwidgets.training.noise): timesteps, pyramid noise, weights."""
from __future__ import annotations

import pytest
import torch

from sdwidgets.training.architecture import training_scheduler
from sdwidgets.training.noise import blind_top, draw_timesteps, pyramid_noise, snr_weights, whiten_quiet


def test_high_noise_share_draws_that_share_from_the_noisier_half():
    t = draw_timesteps(4000, high_noise_share=0.5, generator=torch.Generator().manual_seed(0))
    assert (t[:2000] >= 500).all() and t.min() >= 0 and t.max() <= 999
    assert 0.45 < (t[2000:] >= 500).float().mean() < 0.55  # the rest stays uniform
    assert (draw_timesteps(64, 1.0) >= 500).all()
    plain = draw_timesteps(64, 0.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(plain, torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(3)))


def test_pyramid_noise_has_unit_variance_and_strong_coarse_parts():
    torch.manual_seed(0)
    like = torch.zeros(256, 4, 16, 16)
    noise = pyramid_noise(like)
    assert noise.shape == like.shape
    assert torch.allclose(noise.std(dim=(1, 2, 3)), torch.ones(256), atol=1e-4)
    coarse, white = noise.mean(dim=(2, 3)).std(), torch.randn_like(like).mean(dim=(2, 3)).std()
    assert coarse > 3 * white, (coarse, white)  # a channel's mean is no longer ~0


def test_snr_floor_keeps_the_noisiest_timesteps_weighted():
    sched = training_scheduler()
    t = torch.tensor([10, 300, 999])
    plain, floored = snr_weights(sched, t), snr_weights(sched, t, floor=0.05)
    assert plain[0] < 0.1 and plain[1] == 1 and plain[2] == 1  # min-SNR(5): quiet steps capped
    ac = sched.alphas_cumprod[999]
    assert torch.isclose(floored[2], 0.05 / (ac / (1 - ac))) and floored[2] > 10
    assert torch.equal(floored[:2], plain[:2])


def test_whiten_quiet_redraws_only_the_quiet_samples_as_white_noise():
    torch.manual_seed(0)
    noise = pyramid_noise(torch.zeros(512, 4, 16, 16))
    t = torch.cat([torch.full((256,), 100), torch.full((256,), 800)])
    out = whiten_quiet(noise, t, 500)
    assert torch.equal(out[256:], noise[256:])  # the layout-deciding half keeps its pyramid noise
    assert not torch.equal(out[:256], noise[:256])
    quiet_coarse, loud_coarse = out[:256].mean(dim=(2, 3)).std(), out[256:].mean(dim=(2, 3)).std()
    assert quiet_coarse < 0.15 < loud_coarse, (quiet_coarse, loud_coarse)  # white: channel means ~0 (std 1/16)


def test_blind_top_hides_the_layout_only_at_the_top_timesteps():
    sched = training_scheduler()
    torch.manual_seed(0)
    z0 = torch.randn(8, 4, 16, 16)
    noise = torch.randn_like(z0)
    t = torch.tensor([999, 951, 900, 899, 500, 100, 950, 10])
    x_t = sched.add_noise(z0, noise, t)
    torch.manual_seed(1)
    blind_x, target = blind_top(z0, x_t, noise, t, sched, 900)
    top = t >= 900
    assert torch.equal(blind_x[~top], x_t[~top]) and torch.equal(target[~top], noise[~top])
    # the top samples carry nothing of z0: the same draw with another z0 gives the same input
    torch.manual_seed(1)
    other_x, _ = blind_top(-z0, sched.add_noise(-z0, noise, t), noise, t, sched, 900)
    assert torch.equal(blind_x[top], other_x[top]) and (blind_x[top] - x_t[top]).abs().mean() > 0.1
    assert torch.allclose(blind_x[top].std(), torch.tensor(1.0), atol=0.05)  # white, like the sampler's start
    # ... and the target is the epsilon that maps that input back to z0 under the schedule
    assert torch.allclose(sched.add_noise(z0, target, t)[top], blind_x[top], atol=1e-5)


def test_base_loss_applies_its_blind_and_floor_keywords():
    """The recipe's stages steer the base only through base_loss's keywords: each must reach the loss."""
    import numpy as np
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from sdwidgets.training import world
    from sdwidgets.training.losses import base_loss
    from sdwidgets.training.workspace import DEFAULT_ASSET as ASSET

    tok = CLIPTokenizer.from_pretrained(ASSET / "tokenizer")
    unet = UNet2DConditionModel.from_pretrained(ASSET / "unet", torch_dtype=torch.float32)
    te = CLIPTextModel.from_pretrained(ASSET / "text_encoder", torch_dtype=torch.float32)
    rng = np.random.default_rng(0)
    scenes, lat = [world.sample_scene(rng) for _ in range(8)], torch.randn(8, 4, 16, 16)

    def loss(blind_from: int, snr_floor: float) -> float:
        torch.manual_seed(0)
        with torch.no_grad():
            return base_loss(unet, te, tok, training_scheduler(), scenes, lat, 0, 8, high_noise_share=1.0,
                             blind_from=blind_from, snr_floor=snr_floor).item()

    plain = loss(0, 0.05)
    assert loss(1000, 0.05) == plain  # no timestep reaches 1000: nothing is blind
    assert loss(1, 0.05) != plain and loss(0, 0.3) > plain  # a higher floor only adds weight


def test_edge_weighted_loss_weighs_outline_pixels_and_nothing_else():
    import numpy as np

    from sdwidgets.training import world
    from sdwidgets.training.losses import edge_band, edge_weighted_loss

    sc = world.sample_scene(np.random.default_rng(3), force_full=True)
    x = world.to_tensor(world.render(sc)[None])
    band = edge_band(x)[0, 0].numpy().astype(bool)
    mask = world.shape_mask(sc)
    outline = np.zeros_like(mask)  # pixels whose upper or left neighbour is on the other side
    outline[1:] |= mask[1:] != mask[:-1]
    outline[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    assert band[outline].all() and 0.02 < band.mean() < 0.3  # a band around the outline only
    inside = np.argwhere(~band)[0]
    on_edge = np.argwhere(band)[0]

    def loss_with_error_at(yx) -> float:
        y = x.clone()
        y[0, :, yx[0], yx[1]] += 0.5
        return edge_weighted_loss(y, x, weight=4.0).item()

    assert loss_with_error_at(on_edge) / loss_with_error_at(inside) == pytest.approx(4.0, rel=1e-4)
    assert edge_weighted_loss(x + 0.1, x, weight=4.0).item() == pytest.approx(0.1 + 0.01, rel=1e-4)


def test_palette_ce_punishes_a_blend_that_reads_as_another_colour():
    import numpy as np

    from sdwidgets.training import world
    from sdwidgets.training.losses import palette_ce

    pal = torch.from_numpy(world.PALETTE_ARRAY.astype(np.float32) / 127.5 - 1)
    red, blue = pal[world.COLOURS.index("red")], pal[world.COLOURS.index("blue")]
    target = red.view(1, 3, 1, 1).expand(1, 3, 2, 2)
    exact = palette_ce(target.clone(), target)
    near = palette_ce(target + 0.05, target)
    blend = palette_ce(((red + blue) / 2).view(1, 3, 1, 1).expand(1, 3, 2, 2), target)  # purple-ish
    assert exact.shape == (1, 1, 2, 2)
    assert exact.max() < 0.01 and near.max() < 0.05 and blend.min() > 1.0


def test_training_batch_position_share_carries_position_words():
    """The restarts' position_share: that share of the batch comes from scenes placed by a position
    word and its captions name that position; the rest is drawn as before."""
    import numpy as np

    from sdwidgets.training import world
    from sdwidgets.training.losses import training_batch

    rng = np.random.default_rng(3)
    scenes = [world.sample_scene(rng) for _ in range(400)]
    plain_idx, plain_caps = training_batch(scenes, np.random.default_rng(9), 64)
    assert np.array_equal(plain_idx, training_batch(scenes, np.random.default_rng(9), 64, 0.0)[0])
    named = sum(any(p in c for p in world.POSITIONS.values()) for c in plain_caps)
    assert 15 < named < 50  # about half of the plain captions name a position

    idx, caps = training_batch(scenes, np.random.default_rng(9), 64, position_share=0.75)
    for i, c in zip(idx[:48], caps[:48]):
        assert scenes[i].position is not None and world.POSITIONS[scenes[i].position] in c, c
    assert sum(any(p in c for p in world.POSITIONS.values()) for c in caps) >= 48
