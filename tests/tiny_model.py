"""A tiny random Stable Diffusion pipeline built from configs (as diffusers' own tests do).

Used where a test needs a second model or a model without the shipped assets;
everything else runs on the embedded `shapes` model.
"""
from __future__ import annotations

import json
from pathlib import Path


def _tokenizer_files(folder: Path) -> None:
    """A CLIP BPE vocabulary of single characters plus a few whole words (no download)."""
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,!")
    words = ["a", "red", "blue", "circle", "square", "on", "background"]
    vocab = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    merges = []
    for w in words:
        pieces = list(w[:-1]) + [w[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            if pieces[0] not in vocab:
                vocab.append(pieces[0])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")


def build_tiny_pipeline(folder, seed: int = 0):
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    _tokenizer_files(folder / "_tok")
    tokenizer = CLIPTokenizer(str(folder / "_tok" / "vocab.json"), str(folder / "_tok" / "merges.txt"),
                              model_max_length=16, pad_token="<|endoftext|>")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                norm_num_groups=4, attention_head_dim=4)
    vae = AutoencoderKL(block_out_channels=[8, 8, 16, 16], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        norm_num_groups=4, sample_size=64)
    text_encoder = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=16,
                                                intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
                                                vocab_size=len(tokenizer), max_position_embeddings=16))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder / "model")
    return folder / "model"


def build_tiny_lora(model_folder, out_file, rank: int = 4, seed: int = 0):
    """A LoRA for the tiny model (attention + conv layers), saved in diffusers format."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(model_folder, subfolder="unet")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"]))
    torch.manual_seed(seed)
    with torch.no_grad():   # a visible effect: lora_B is zero after init
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(str(out_file.parent), unet_lora_layers=layers,
                                              weight_name=out_file.name)
    return out_file


def build_tiny_controlnet(model_folder, out_folder):
    """A ControlNet initialised from the tiny UNet, with its zero convolutions made non-zero."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(model_folder, subfolder="unet")
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 4, 8, 8))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "zero_conv" in name or "controlnet_down_blocks" in name or "controlnet_mid_block" in name \
                    or "conv_out" in name:
                p.normal_(0, 0.3)
    net.save_pretrained(out_folder)
    return out_folder


def build_tiny_sdxl(folder, seed: int = 0):
    """A tiny random SDXL pipeline (two CLIP text encoders, text_time embedding), the shapes tokenizer."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from sdwidgets.models import BUILTIN_MODELS

    folder = Path(folder)
    tokenizer = CLIPTokenizer.from_pretrained(BUILTIN_MODELS["shapes"] / "tokenizer")
    torch.manual_seed(seed)
    config = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                  num_hidden_layers=2, vocab_size=len(tokenizer), max_position_embeddings=77, projection_dim=16)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=4, attention_head_dim=(2, 4), use_linear_projection=True,
                                addition_embed_type="text_time", addition_time_embed_dim=8,
                                projection_class_embeddings_input_dim=6 * 8 + 16)
    vae = AutoencoderKL(block_out_channels=[8, 8, 16, 16], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        norm_num_groups=4, sample_size=64)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(**config)),
                                     text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**config)),
                                     tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet,
                                     scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear",
                                                                      beta_start=0.00085, beta_end=0.012))
    pipe.save_pretrained(folder / "model")
    return folder / "model"
