"""The embedded model's architecture: diffusers / transformers configs of its VAE, UNet, text
encoder and scheduler (Stable Diffusion 1.x classes, sized for 64x64 images on a CPU)."""
from __future__ import annotations

UNET_CHANNELS = (48, 96, 128)
TEXT_DIM = 128


def vae_config(factor: int) -> dict:
    blocks = (32, 32, 64) if factor == 4 else (32, 32, 64, 64)
    return dict(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * len(blocks),
        up_block_types=["UpDecoderBlock2D"] * len(blocks),
        block_out_channels=list(blocks), layers_per_block=1, norm_num_groups=16,
        sample_size=64,
    )


def scheduler_config() -> dict:
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                beta_schedule="scaled_linear", prediction_type="epsilon", steps_offset=1,
                set_alpha_to_one=False, skip_prk_steps=True,
                timestep_spacing="leading")


def default_scheduler():
    """The shipped sampler: Euler with SD 1.5's betas. (PNDM, SD 1.5's own default, measured
    worse on this model at 20 steps: fg 65% / bg 77% vs 73% / 92% on 48 prompts.)"""
    from diffusers import EulerDiscreteScheduler

    cfg = {k: v for k, v in scheduler_config().items() if k not in ("skip_prk_steps", "set_alpha_to_one")}
    return EulerDiscreteScheduler(**cfg)


def training_scheduler():
    """DDPM with the same betas: adds noise to latents during training."""
    from diffusers import DDPMScheduler

    cfg = {k: v for k, v in scheduler_config().items() if k not in ("skip_prk_steps", "set_alpha_to_one")}
    return DDPMScheduler(**cfg, clip_sample=False)


def unet_config(factor: int) -> dict:
    n = len(UNET_CHANNELS)
    return dict(
        sample_size=64 // factor, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=list(UNET_CHANNELS),
        down_block_types=["DownBlock2D"] + ["CrossAttnDownBlock2D"] * (n - 1),
        up_block_types=["CrossAttnUpBlock2D"] * (n - 1) + ["UpBlock2D"],
        cross_attention_dim=TEXT_DIM, attention_head_dim=8, norm_num_groups=16,
    )


def text_config(tok) -> "object":
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tok), hidden_size=TEXT_DIM, intermediate_size=4 * TEXT_DIM,
        num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=77,
        projection_dim=TEXT_DIM, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, hidden_act="quick_gelu",
    )

