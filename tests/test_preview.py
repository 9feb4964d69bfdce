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
    # a linear map cannot reproduce this VAE's colours exactly; it must tell the shape from the ground
    assert centre[0] - corner[0] > 30 and corner[2] > corner[0] and centre[0] > centre[1]   # red in, blue out


@pytest.mark.skipif(not EMBEDDED_READY, reason="needs the embedded model's VAE")
def test_ridge_fit_beats_plain_least_squares_on_denoiser_outputs(session):
    pipe = session.pipeline()
    images = [red_circle_on_blue()] + [Image.new("RGB", (64, 64), c) for c in
                                       [(245, 245, 245), (25, 25, 25), (40, 170, 60), (240, 210, 40)]]
    generated = pipe(["a red circle on a blue background", "a green square on a white background"],
                     num_inference_steps=10, output_type="latent", generator=torch.Generator().manual_seed(0)).images

    def error(rgb):
        target = torch.nn.functional.adaptive_avg_pool2d(latents.decode(pipe.vae, generated), generated.shape[-2:])
        shown = torch.stack([torch.from_numpy(np.asarray(im)).permute(2, 0, 1) for im in rgb.to_images(generated)])
        return (shown.float() / 127.5 - 1 - target).abs().mean().item()

    ridge, plain = error(fit_latent_rgb(pipe.vae, images)), error(fit_latent_rgb(pipe.vae, images, ridge=0.0))
    assert ridge < plain and ridge < 0.5


def test_side_by_side_repeats_the_last_frame_of_a_short_image():
    a = [Image.new("RGB", (2, 2), "red")] * 3
    b = [Image.new("RGB", (2, 2), "blue")] * 2
    frames = _side_by_side([a, b])
    assert len(frames) == 3 and frames[2].size == grid([a[0], b[0]], pad=0).size
    assert frames[2].getpixel((3, 0)) == (0, 0, 255)
