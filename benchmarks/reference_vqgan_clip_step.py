"""The per-step work of the widely used public VQGAN+CLIP loop, re-implemented for side-by-side timing.

Source: nerdyrodent/VQGAN-CLIP ``generate.py`` (commit df49139, default settings: ``cut_method="latest"``,
augments ``Af Pe Ji Er``, Adam lr 0.1), itself after Katherine Crowson's VQGAN+CLIP Colab notebook
(https://github.com/nerdyrodent/VQGAN-CLIP, MIT licence; notebook by Katherine Crowson, MIT licence).
What one ``step()`` does is what that script's ``train(i)`` does:

    synth(z): vector_quantize (one-hot matmul, replace_grad) -> model.decode -> clamp_with_grad to [0, 1]
    make_cutouts(out): cutn x (adaptive avg-pool + adaptive max-pool) / 2 -> kornia augmentations
        (RandomAffine, RandomPerspective, ColorJitter, RandomErasing) -> + per-crop noise
    perceptor.encode_image(normalize(cutouts)) -> Prompt: spherical distance, weight, stop
    sum(losses).backward() -> opt.step() -> z clamped to the codebook's range

Differences, all without effect on the cost: the VQGAN is built from ``taming.modules`` like taming's
VQModel minus its loss (the script deletes ``model.loss`` too); CLIP is open_clip's ViT-B-32 (same
architecture as OpenAI's ``clip`` package model); ``checkin``/PNG saving every 50 steps is left out.
Weights are random (the cost of a step does not depend on their values). Needs ``kornia``.
"""

from __future__ import annotations

import contextlib
import io

import torch
from torch import nn, optim
from torch.nn import functional as F


class ReplaceGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_forward, x_backward):
        ctx.shape = x_backward.shape
        return x_forward

    @staticmethod
    def backward(ctx, grad_in):
        return None, grad_in.sum_to_size(ctx.shape)


replace_grad = ReplaceGrad.apply


class ClampWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, min, max):
        ctx.min = min
        ctx.max = max
        ctx.save_for_backward(input)
        return input.clamp(min, max)

    @staticmethod
    def backward(ctx, grad_in):
        (input,) = ctx.saved_tensors
        return grad_in * (grad_in * (input - input.clamp(ctx.min, ctx.max)) >= 0), None, None


clamp_with_grad = ClampWithGrad.apply


def vector_quantize(x, codebook):
    d = x.pow(2).sum(dim=-1, keepdim=True) + codebook.pow(2).sum(dim=1) - 2 * x @ codebook.T
    indices = d.argmin(-1)
    x_q = F.one_hot(indices, codebook.shape[0]).to(d.dtype) @ codebook
    return replace_grad(x_q, x)


class Prompt(nn.Module):
    def __init__(self, embed, weight=1.0, stop=float("-inf")):
        super().__init__()
        self.register_buffer("embed", embed)
        self.register_buffer("weight", torch.as_tensor(weight))
        self.register_buffer("stop", torch.as_tensor(stop))

    def forward(self, input):
        input_normed = F.normalize(input.unsqueeze(1), dim=2)
        embed_normed = F.normalize(self.embed.unsqueeze(0), dim=2)
        dists = input_normed.sub(embed_normed).norm(dim=2).div(2).arcsin().pow(2).mul(2)
        dists = dists * self.weight.sign()
        return self.weight.abs() * replace_grad(dists, torch.maximum(dists, self.stop)).mean()


class MakeCutouts(nn.Module):
    """nerdyrodent's default ("latest") cutouts with the default augments Af, Pe, Ji, Er."""

    def __init__(self, cut_size, cutn, cut_pow=1.0):
        super().__init__()
        import kornia.augmentation as K

        self.cut_size = cut_size
        self.cutn = cutn
        self.cut_pow = cut_pow
        self.augs = nn.Sequential(
            K.RandomAffine(
                degrees=15, translate=0.1, shear=5, p=0.7, padding_mode="zeros", keepdim=True
            ),
            K.RandomPerspective(distortion_scale=0.7, p=0.7),
            K.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.1, p=0.7),
            K.RandomErasing(scale=(0.1, 0.4), ratio=(0.3, 1 / 0.3), same_on_batch=True, p=0.7),
        )
        self.noise_fac = 0.1
        self.av_pool = nn.AdaptiveAvgPool2d((self.cut_size, self.cut_size))
        self.max_pool = nn.AdaptiveMaxPool2d((self.cut_size, self.cut_size))

    def forward(self, input):
        cutouts = []
        for _ in range(self.cutn):
            cutout = (self.av_pool(input) + self.max_pool(input)) / 2
            cutouts.append(cutout)
        batch = self.augs(torch.cat(cutouts, dim=0))
        if self.noise_fac:
            facs = batch.new_empty([self.cutn, 1, 1, 1]).uniform_(0, self.noise_fac)
            batch = batch + facs * torch.randn_like(batch)
        return batch


class TamingVQModel(nn.Module):
    """taming.models.vqgan.VQModel's modules and decode(), without Lightning and without the loss."""

    def __init__(self, ddconfig, n_embed, embed_dim):
        super().__init__()
        from taming.modules.diffusionmodules.model import Decoder, Encoder
        from taming.modules.vqvae.quantize import VectorQuantizer2

        with contextlib.redirect_stdout(io.StringIO()):
            self.encoder = Encoder(**ddconfig)
            self.decoder = Decoder(**ddconfig)
        self.quantize = VectorQuantizer2(n_embed, embed_dim, beta=0.25)
        self.quant_conv = nn.Conv2d(ddconfig["z_channels"], embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)

    def decode(self, quant):
        quant = self.post_quant_conv(quant)
        return self.decoder(quant)


class ReferenceLoop:
    """Set-up and per-step work of generate.py for one text prompt, at ``size`` with ``cutn`` cutouts."""

    def __init__(self, model, perceptor, tokenizer, size=256, cutn=32, prompt="a painting", seed=0):
        torch.manual_seed(seed)
        self.model = model.eval().requires_grad_(False)
        self.perceptor = perceptor.eval().requires_grad_(False)
        cut_size = perceptor.visual.image_size
        cut_size = cut_size[0] if isinstance(cut_size, (tuple, list)) else cut_size
        f = 2 ** (model.decoder.num_resolutions - 1)
        self.make_cutouts = MakeCutouts(cut_size, cutn, cut_pow=1.0)
        toks = size // f
        e_dim = model.quantize.e_dim
        n_toks = model.quantize.n_e
        self.codebook = model.quantize.embedding.weight
        self.z_min = self.codebook.min(dim=0).values[None, :, None, None]
        self.z_max = self.codebook.max(dim=0).values[None, :, None, None]
        one_hot = F.one_hot(torch.randint(n_toks, [toks * toks]), n_toks).float()
        z = one_hot @ self.codebook
        self.z = (
            z.view([-1, toks, toks, e_dim]).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
        )
        self.opt = optim.Adam([self.z], lr=0.1)
        mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
        std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
        self.normalize = lambda x: (x - mean) / std
        embed = perceptor.encode_text(tokenizer([prompt])).float()
        self.pMs = [Prompt(embed, 1.0, float("-inf"))]

    def synth(self, z):
        z_q = vector_quantize(z.movedim(1, 3), self.codebook).movedim(3, 1)
        return clamp_with_grad(self.model.decode(z_q).add(1).div(2), 0, 1)

    def step(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        out = self.synth(self.z)
        iii = self.perceptor.encode_image(self.normalize(self.make_cutouts(out))).float()
        loss = sum(prompt(iii) for prompt in self.pMs)
        loss.backward()
        self.opt.step()
        with torch.inference_mode():
            self.z.copy_(self.z.maximum(self.z_min).minimum(self.z_max))
        return float(loss)
