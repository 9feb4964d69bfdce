"""Tiny random models of the other families, built from configs like diffusers' own tests and saved
with save_pretrained, so tests load them by path as a user's model: SD 2.x (v-prediction), SDXL (two
CLIP encoders, text_time), SDXL refiner, SD3 (MMDiT, 16-channel VAE, flow matching, a tiny T5).
"""
from __future__ import annotations

from pathlib import Path

from tiny_model import _tokenizer_files


def _clip_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    _tokenizer_files(folder / "_tok")
    return CLIPTokenizer(str(folder / "_tok" / "vocab.json"), str(folder / "_tok" / "merges.txt"),
                         model_max_length=16, pad_token="<|endoftext|>")


def _clip_config(vocab: int, hidden: int, projection: int | None = None):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=hidden, intermediate_size=32,
                          num_attention_heads=2, num_hidden_layers=2, vocab_size=vocab, max_position_embeddings=16,
                          hidden_act="gelu", projection_dim=projection or hidden)


def _vae(latent_channels: int = 4, **extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=[8, 8, 16, 16], in_channels=3, out_channels=3,
                         latent_channels=latent_channels, down_block_types=["DownEncoderBlock2D"] * 4,
                         up_block_types=["UpDecoderBlock2D"] * 4, norm_num_groups=4, sample_size=64, **extra)


def build_sd2(folder, seed: int = 0):
    """SD 2.x layout: linear projections, gelu text encoder, v-prediction DDIM."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(folder)
    tokenizer = _clip_tokenizer(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=24,
                                norm_num_groups=4, attention_head_dim=(2, 4), use_linear_projection=True)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction")
    pipe = StableDiffusionPipeline(vae=_vae(), text_encoder=CLIPTextModel(_clip_config(len(tokenizer), 24)),
                                   tokenizer=tokenizer, unet=unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder / "sd2")
    return folder / "sd2"


def _sdxl_unet(cross: int, time_ids: int, pooled: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=cross,
                                norm_num_groups=4, attention_head_dim=(2, 4), use_linear_projection=True,
                                addition_embed_type="text_time", addition_time_embed_dim=8,
                                transformer_layers_per_block=(1, 2),
                                projection_class_embeddings_input_dim=time_ids * 8 + pooled)


def build_sdxl(folder, seed: int = 0):
    """SDXL: CLIP-L-like + CLIP-G-like encoders (hidden states concatenated), text_time conditioning."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(folder)
    tokenizer = _clip_tokenizer(folder)
    torch.manual_seed(seed)
    unet = _sdxl_unet(cross=16 + 32, time_ids=6, pooled=32)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=_vae(), text_encoder=CLIPTextModel(_clip_config(len(tokenizer), 16)),
                                     text_encoder_2=CLIPTextModelWithProjection(_clip_config(len(tokenizer), 32)),
                                     tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)
    pipe.save_pretrained(folder / "sdxl")
    return folder / "sdxl"


def build_sdxl_refiner(folder, seed: int = 0):
    """SDXL refiner: only the second encoder, aesthetic-score time ids (5 of them)."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline
    from transformers import CLIPTextModelWithProjection

    folder = Path(folder)
    tokenizer = _clip_tokenizer(folder)
    torch.manual_seed(seed)
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=_vae(), text_encoder=None, tokenizer=None,
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(len(tokenizer), 32)), tokenizer_2=tokenizer,
        unet=_sdxl_unet(cross=32, time_ids=5, pooled=32), requires_aesthetics_score=True,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                         steps_offset=1))
    pipe.save_pretrained(folder / "sdxl-refiner")
    return folder / "sdxl-refiner"


def _t5(folder: Path, d_model: int):
    """A tiny T5 encoder and a word-level fast tokenizer built locally (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    words = ["<pad>", "</s>", "<unk>", "a", "red", "blue", "circle", "square", "on", "background"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>", model_max_length=16)
    encoder = T5EncoderModel(T5Config(vocab_size=len(words), d_model=d_model, d_kv=8, d_ff=32, num_layers=2,
                                      num_heads=2, relative_attention_num_buckets=8, decoder_start_token_id=0))
    return encoder, tokenizer


def build_sd3(folder, seed: int = 0):
    """SD3: MMDiT transformer on a 16-channel VAE, two CLIP encoders with projection + T5, flow matching."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    folder = Path(folder)
    tokenizer = _clip_tokenizer(folder)
    torch.manual_seed(seed)
    # CLIP hidden states (16 + 16) are zero-padded to T5's width; pooled outputs (16 + 16) concatenated
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=2, caption_projection_dim=16,
                                        joint_attention_dim=32, pooled_projection_dim=32, pos_embed_max_size=16)
    t5, t5_tokenizer = _t5(folder, d_model=32)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, vae=_vae(16, use_quant_conv=False, use_post_quant_conv=False,
                                          shift_factor=0.0609, scaling_factor=1.5035),
        text_encoder=CLIPTextModelWithProjection(_clip_config(len(tokenizer), 16)), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(len(tokenizer), 16)), tokenizer_2=tokenizer,
        text_encoder_3=t5, tokenizer_3=t5_tokenizer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    pipe.save_pretrained(folder / "sd3")
    return folder / "sd3"


def build_controlnet(model_folder, out_folder, seed: int = 0):
    """A ControlNet for a tiny UNet model (SD1/2/SDXL), zero convolutions made non-zero so it acts."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(model_folder, subfolder="unet")
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 4, 8, 8))
    _wake(net, seed)
    net.save_pretrained(out_folder)
    return out_folder


def build_sd3_controlnet(model_folder, out_folder, seed: int = 0):
    from diffusers import SD3ControlNetModel, SD3Transformer2DModel

    transformer = SD3Transformer2DModel.from_pretrained(model_folder, subfolder="transformer")
    net = SD3ControlNetModel.from_transformer(transformer, num_layers=1, num_extra_conditioning_channels=0)
    _wake(net, seed)
    net.save_pretrained(out_folder)
    return out_folder


def _wake(net, seed):
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if any(k in name for k in ("zero_conv", "controlnet_down_blocks", "controlnet_mid_block", "conv_out",
                                       "controlnet_blocks", "pos_embed_input")):
                p.normal_(0, 0.3)


def lora_layers(model_folder, seed: int = 0, targets=("to_q", "to_k", "to_v", "to_out.0")) -> dict:
    """peft LoRA weights (lora_A/lora_B, diffusers module names) on the denoiser, made to visibly act."""
    import torch
    from diffusers import DiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    pipe = DiffusionPipeline.from_pretrained(model_folder)
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    denoiser.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=list(targets)))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in denoiser.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return get_peft_model_state_dict(denoiser)


def build_lora(model_folder, out_file, seed: int = 0):
    """A LoRA in peft/diffusers format on the denoiser's attention (UNet or SD3 transformer).

    The peft keys are saved as they are: diffusers' `convert_state_dict_to_diffusers` would rename
    the attention layers to an older layout that load_lora_weights then drops.
    """
    from diffusers import DiffusionPipeline

    layers = lora_layers(model_folder, seed)
    out_file = Path(out_file)
    cls = type(DiffusionPipeline.from_pretrained(model_folder))
    role = "transformer_lora_layers" if any(".attn.to_" in k for k in layers) and "sd3" in cls.__name__.lower() \
        or cls.__name__.startswith("StableDiffusion3") else "unet_lora_layers"
    cls.save_lora_weights(str(out_file.parent), **{role: layers}, weight_name=out_file.name)
    return out_file


def to_kohya(layers: dict, rank: int = 4) -> dict:
    """The same LoRA in kohya-ss / AUTOMATIC1111 layout (the inverse of diffusers' converter naming):
    lora_unet_<module path with _>.lora_down.weight / .lora_up.weight / .alpha."""
    import torch

    out = {}
    for key, value in layers.items():
        module, kind = key.rsplit(".lora_", 1)
        name = "lora_unet_" + module.replace(".", "_")
        out[f"{name}.{'lora_down' if kind.startswith('A') else 'lora_up'}.weight"] = value.contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(rank))
    return out
