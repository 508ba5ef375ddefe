"""A text-to-image pipeline as one ``torch.nn.Module``, built from component configs only.

The loop follows diffusers' StableDiffusionPipeline / StableDiffusionXLPipeline with their
defaults (one image per prompt, classifier-free guidance, no safety checker), so no pipeline
download is needed:

1. text encoding: ``text_encoder`` on the prompt and, unless the negative embeddings are zeros
   (SDXL's ``force_zeros_for_empty_prompt``), on the empty negative prompt: 2 calls for SD 1.5,
   SD 2.1 and tiny-sd; SDXL calls ``text_encoder`` and ``text_encoder_2`` once each;
2. denoising: one ``unet`` call per scheduler timestep, on the latents doubled to batch 2
   (unconditional + conditional), then ``scheduler.step`` (not a module);
3. decoding: one ``vae_decode`` call (``post_quant_conv`` then the VAE decoder).

Steps: ``set_timesteps(N)`` gives N timesteps for DDIM and Euler; PNDM (SD 1.5, tiny-sd) with
``skip_prk_steps`` gives N + 1 (its first PLMS step is taken twice), exactly as the real
pipeline, so 50 steps are 51 UNet calls there. ``model.unet_calls(steps)`` says how many.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["TextToImage", "VaeDecode", "make_scheduler"]


def make_scheduler(config: dict):
    """A diffusers scheduler from a scheduler config dict holding its ``_class_name``."""
    import diffusers

    config = dict(config)
    cls = getattr(diffusers, config.pop("_class_name"))
    return cls.from_config(config)


class VaeDecode(nn.Module):
    """The decoding half of an AutoencoderKL, as a module whose forward is the decode."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        latents = latents / self.vae.config.scaling_factor
        return self.vae.decode(latents, return_dict=False)[0]


class TextToImage(nn.Module):
    """Text encoder(s), UNet, VAE decoder and scheduler; ``forward`` is one whole inference."""

    def __init__(self, text_encoder, unet, vae, scheduler, *, text_encoder_2=None,
                 guidance_scale=7.5, zero_negative=False, name=""):
        super().__init__()
        self.text_encoder = text_encoder
        self.text_encoder_2 = text_encoder_2
        self.unet = unet
        self.vae_decode = VaeDecode(vae)
        self.scheduler = scheduler
        self.guidance_scale = guidance_scale
        self.zero_negative = zero_negative
        self.name = name

    @property
    def xl(self) -> bool:
        return self.text_encoder_2 is not None

    def _encode(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.xl:
            return self.text_encoder(ids, return_dict=False)[0], None
        # SDXL: penultimate hidden states of both encoders, concatenated; pooled from the 2nd.
        first = self.text_encoder(ids, output_hidden_states=True)
        second = self.text_encoder_2(ids, output_hidden_states=True)
        embeds = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
        return embeds, second.text_embeds

    def forward(self, input_ids: torch.Tensor, latents: torch.Tensor,
                negative_input_ids: torch.Tensor | None = None, steps: int = 50) -> torch.Tensor:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        batch = input_ids.shape[0]
        embeds, pooled = self._encode(input_ids)
        if negative_input_ids is None:
            neg_embeds = torch.zeros_like(embeds)
            neg_pooled = None if pooled is None else torch.zeros_like(pooled)
        else:
            neg_embeds, neg_pooled = self._encode(negative_input_ids)
        context = torch.cat([neg_embeds, embeds]).to(latents.dtype)
        added = None
        if self.xl:
            h, w = (s * self.vae_scale_factor for s in latents.shape[-2:])
            time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=latents.dtype,
                                    device=latents.device).repeat(2 * batch, 1)
            added = {"text_embeds": torch.cat([neg_pooled, pooled]).to(latents.dtype),
                     "time_ids": time_ids}
        sched = self.scheduler
        sched.set_timesteps(steps, device=latents.device)
        latents = latents * sched.init_noise_sigma
        for t in sched.timesteps:
            x = sched.scale_model_input(torch.cat([latents, latents]), t)
            noise = self.unet(x, t, encoder_hidden_states=context, added_cond_kwargs=added,
                              return_dict=False)[0]
            uncond, cond = noise.chunk(2)
            noise = uncond + self.guidance_scale * (cond - uncond)
            latents = sched.step(noise, t, latents, return_dict=False)[0]
        image = self.vae_decode(latents)
        return (image / 2 + 0.5).clamp(0, 1)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae_decode.vae.config.block_out_channels) - 1)

    def unet_calls(self, steps: int) -> int:
        """How many UNet calls ``forward(..., steps=steps)`` makes (the scheduler's timesteps)."""
        self.scheduler.set_timesteps(steps)
        return len(self.scheduler.timesteps)
