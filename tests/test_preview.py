"""Latent -> RGB previews: the shipped factors, the least-squares fit, the recorder."""
import numpy as np
import pytest
import torch
from conftest import EMBEDDED_READY
from PIL import Image, ImageDraw

from sdwidgets import latents
from sdwidgets.images import grid
from sdwidgets.preview import SD15_FACTORS, LatentRGB, _side_by_side, factors_for, fit_latent_rgb


def red_circle_on_blue(size=64):
    im = Image.new("RGB", (size, size), (40, 80, 220))
    ImageDraw.Draw(im).ellipse([16, 16, 48, 48], fill=(220, 40, 40))
    return im


def encode(vae, image):
    return latents.encode(vae, [image])


def test_linear_map_shapes_and_range():
    rgb = LatentRGB(SD15_FACTORS, [0.0, 0.0, 0.0])
    images = rgb.to_images(torch.zeros(2, 4, 8, 6))
    assert len(images) == 2 and images[0].size == (6, 8)
    assert np.asarray(images[0]).min() == np.asarray(images[0]).max() == 127   # zero latent = mid grey


@pytest.mark.skipif(not EMBEDDED_READY, reason="needs the embedded model's VAE")
def test_shipped_factors_preview_the_right_colours(session):
    pipe = session.pipeline()
    rgb = factors_for(pipe)
    preview = np.asarray(rgb.to_images(encode(pipe.vae, red_circle_on_blue()))[0]).astype(int)
    h, w, _ = preview.shape
    centre, corner = preview[h // 2, w // 2], preview[0, 0]
    assert centre[0] > centre[2] + 60 and corner[2] > corner[0] + 60    # red inside, blue outside


@pytest.mark.skipif(not EMBEDDED_READY, reason="needs the embedded model's VAE")
def test_fit_on_the_vae_own_decodes_matches_the_shipped_quality(session):
    vae = session.pipeline().vae
    images = [red_circle_on_blue()] + [Image.new("RGB", (64, 64), c) for c in
                                       [(245, 245, 245), (25, 25, 25), (40, 170, 60), (240, 210, 40)]]
    fitted = fit_latent_rgb(vae, images)
    z = encode(vae, images[0])
    with torch.no_grad():
        decoded = vae.decode(z / vae.config.scaling_factor).sample
    target = torch.nn.functional.adaptive_avg_pool2d(decoded, z.shape[-2:])[0].permute(1, 2, 0).numpy()
    target = (target + 1) * 127.5
    preview = np.asarray(fitted.to_images(z)[0]).astype(float)
    assert np.abs(preview - target).mean() < 25        # within ~10% of the range on average


def test_side_by_side_repeats_the_last_frame_of_a_short_image():
    a = [Image.new("RGB", (2, 2), "red")] * 3
    b = [Image.new("RGB", (2, 2), "blue")] * 2
    frames = _side_by_side([a, b])
    assert len(frames) == 3 and frames[2].size == grid([a[0], b[0]], pad=0).size
    assert frames[2].getpixel((3, 0)) == (0, 0, 255)
