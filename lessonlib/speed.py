"""Optional speed paths of VQGAN+CLIP: each computes the same maths as the plain path, faster or leaner.

Introduced in lesson 04_vqgan_clip.

Nothing here changes *what* ``lessonlib.generate`` computes, only how fast and in how much memory.
Each path has a test in ``tests/test_speed.py`` that compares it with the plain path:

* ``encode_image_fast`` (with ``fast_vit_supported``): open_clip's ViT forward, written with plain matrix
  products, 1.2x faster in float32 and 5.9x in bfloat16 on a 2-core CPU (BENCHMARKS.md, Lesson 04);
* bfloat16 (``decoder_dtype``, ``critic_dtype``, ``vit_dtype``): where measured faster (a GPU with
  bf16, a CPU with native bf16), the decoder and a ViT image tower run in bfloat16 (about 3 significant
  digits instead of 7);
* ``decode_lean`` with decoder checkpointing (``auto_checkpoint_levels``): taming's decoder written
  out with lighter activations; its high-resolution levels are recomputed in the backward pass
  instead of stored;
* ``release_freed_memory`` (glibc's ``malloc_trim``) and ``_converted_copy`` (a bfloat16 copy of an
  image tower made without a float32 copy in between): lower peak memory.

Example:
    >>> decoder_dtype(None, torch.device("cpu"), "float32")
    torch.float32
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

PRECISIONS = ("auto", "float32", "bfloat16")


# --------------------------------------------------------------------------------------- precision


def check_precision(precision: str) -> str:
    """``precision`` if it is one of ``PRECISIONS``, else a ``ValueError`` naming the choices.

    Introduced in lesson 04_vqgan_clip.

    Example:
        >>> check_precision("auto")
        'auto'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose 'auto', 'float32' or 'bfloat16'")
    return precision


def _bf16_cpu_ok() -> bool:
    """True on a CPU with native bfloat16 (AVX512-BF16 or AMX), where oneDNN runs bf16 fast."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - older torch
        return False


def _bf16_fast(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _bf16_cpu_ok()


def decoder_dtype(vqgan, device: torch.device, precision: str) -> torch.dtype:
    """The dtype the VQGAN decoder runs in: ``precision``, or for ``"auto"`` bfloat16 where faster.

    Introduced in lesson 04_vqgan_clip. On a CPU only wide decoders (``ch >= 64``, e.g. taming's f16
    with ch 128) gain: its forward+backward was ~3x faster in bf16 on a 2-core AVX512-BF16 CPU; the tiny
    Shapes World VQGAN (ch 32) stays in float32, as fast and exact.

    Example:
        >>> decoder_dtype(None, torch.device("cpu"), "bfloat16")
        torch.bfloat16
    """
    if check_precision(precision) != "auto":
        return getattr(torch, precision)
    wide = device.type == "cuda" or vqgan.config.ch >= 64
    return torch.bfloat16 if wide and _bf16_fast(device) else torch.float32


def vit_dtype(visual, device: torch.device) -> torch.dtype:
    """The dtype an image tower runs in under ``precision="auto"``: bfloat16 for open_clip ViTs where
    faster, float32 for anything else.

    Introduced in lesson 04_vqgan_clip. ViT-B-32's forward+backward through ``encode_image_fast`` was
    2.3x faster in bf16 on a 2-core AVX512-BF16 CPU; the tiny ResNet CLIPs are as fast in float32.

    Example:
        >>> vit_dtype(torch.nn.Identity(), torch.device("cpu"))
        torch.float32
    """
    if visual is None or not fast_vit_supported(visual):
        return torch.float32
    return torch.bfloat16 if _bf16_fast(device) else torch.float32


def critic_dtype(critic, precision: str) -> torch.dtype:
    """The dtype a critic's image tower runs in: ``precision``, or for ``"auto"`` the critic's own
    choice (its ``dtype``, e.g. bfloat16 for an open_clip ViT where faster; see ``lessonlib.critics``).

    Introduced in lesson 04_vqgan_clip.

    Example:
        >>> critic_dtype(None, "bfloat16")
        torch.bfloat16
    """
    if check_precision(precision) != "auto":
        return getattr(torch, precision)
    return critic.dtype


def autocast(device: torch.device, dtype: torch.dtype):
    """``torch.autocast`` to ``dtype`` on ``device``, or nothing at all for float32.

    Introduced in lesson 04_vqgan_clip.

    Example:
        >>> with autocast(torch.device("cpu"), torch.float32):
        ...     (torch.ones(2) * 2).dtype
        torch.float32
    """
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _converted_copy(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of ``module`` with floating-point weights in ``dtype``, made without a full-precision
    copy in between (each tensor is converted straight into the copy)."""
    import copy

    memo = {}
    for tensor in list(module.parameters()) + list(module.buffers()):
        converted = tensor.detach().to(dtype) if tensor.is_floating_point() else tensor.detach()
        memo[id(tensor)] = (
            torch.nn.Parameter(converted, requires_grad=False)
            if isinstance(tensor, torch.nn.Parameter)
            else converted.clone()
        )
    return copy.deepcopy(module, memo).eval()


# ---------------------------------------------------------------------------------------- memory


def auto_checkpoint_levels(vqgan, wh: tuple[int, int], min_side: int = 64) -> int:
    """How many of the decoder's levels (highest resolution first) have a side of ``min_side`` or more.

    Introduced in lesson 04_vqgan_clip. ``generate`` recomputes those levels in the backward pass
    (``decode_lean``): at 256x256 with the f16 decoder, 3 levels, peak memory -270 MB for +4% time.

    Example:
        >>> from lessonlib.vqgan import VQGAN, VQGANConfig
        >>> auto_checkpoint_levels(VQGAN(VQGANConfig.imagenet_f16_16384(), with_encoder=False), (256, 256))
        3
    """
    levels = len(vqgan.config.ch_mult)
    side = min(wh)
    return sum(1 for i in range(levels) if side // 2**i >= min_side)


def decode_lean(vqgan, z_q: torch.Tensor, checkpoint_levels: int = 0) -> torch.Tensor:
    """``vqgan.decode(z_q)`` with less memory for the backward pass: the same modules and maths.

    Introduced in lesson 04_vqgan_clip.

    taming's ``Decoder.forward`` written out, with ``F.silu`` (one saved tensor) instead of
    ``x * sigmoid(x)`` (two), PyTorch's fused attention, and optionally the residual blocks of the
    ``checkpoint_levels`` highest-resolution levels recomputed in the backward pass instead of stored
    (less memory, one more forward of those blocks). ``tests/test_speed.py`` checks values and latent
    gradients against ``vqgan.decode``.

    Example:
        >>> from lessonlib.vqgan import load_vqgan
        >>> vqgan = load_vqgan()
        >>> decode_lean(vqgan, vqgan.codes_to_latents(torch.zeros(1, 8, 8, dtype=torch.long))).shape
        torch.Size([1, 3, 32, 32])
    """
    from torch.utils.checkpoint import checkpoint

    dec = vqgan.decoder
    h = dec.conv_in(vqgan.post_quant_conv(z_q))
    h = _resblock(dec.mid.block_1, h)
    h = _attention(dec.mid.attn_1, h)
    h = _resblock(dec.mid.block_2, h)
    for i_level in reversed(range(dec.num_resolutions)):
        level = dec.up[i_level]
        recompute = i_level < checkpoint_levels and torch.is_grad_enabled()
        for i_block in range(dec.num_res_blocks + 1):
            if recompute:  # keep only this block's input; redo its forward during backward
                h = checkpoint(_resblock, level.block[i_block], h, use_reentrant=False)
            else:
                h = _resblock(level.block[i_block], h)
            if len(level.attn) > 0:
                h = _attention(level.attn[i_block], h)
        if i_level != 0:
            h = level.upsample(h)
    if dec.give_pre_end:
        return h
    return dec.conv_out(F.silu(dec.norm_out(h)))


def _resblock(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """taming's ResnetBlock.forward (no timestep embedding), with F.silu."""
    h = block.conv1(F.silu(block.norm1(x)))
    h = block.conv2(block.dropout(F.silu(block.norm2(h))))
    if block.in_channels != block.out_channels:
        x = block.conv_shortcut(x) if block.use_conv_shortcut else block.nin_shortcut(x)
    return x + h


def _attention(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """taming's AttnBlock.forward (single-head attention over pixels), with fused attention."""
    h = block.norm(x)
    b, c, hh, ww = h.shape
    q, k, v = (
        conv(h).reshape(b, 1, c, hh * ww).transpose(2, 3) for conv in (block.q, block.k, block.v)
    )
    out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(c), as taming
    return x + block.proj_out(out.transpose(2, 3).reshape(b, c, hh, ww))


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc's ``malloc_trim``).

    Introduced in lesson 04_vqgan_clip.

    After ``del clip_model`` (see ``lessonlib.critics.ImageGuide``), the text tower's ~250 MB are free
    inside the process but glibc keeps most of them mapped; trimming returns them, so the peak of the
    steps that follow stays lower. Does nothing where there is no glibc (macOS, Windows).

    Example:
        >>> release_freed_memory()
    """
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


# ------------------------------------------------------------------------- CLIP's image tower, fast


def fast_vit_supported(visual) -> bool:
    """True if ``encode_image_fast`` can run this image tower (open_clip's standard ViT).

    Introduced in lesson 04_vqgan_clip.

    Example:
        >>> fast_vit_supported(torch.nn.Identity())
        False
    """
    try:
        from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
    except ImportError:  # pragma: no cover - open_clip is a dependency
        return False
    if type(visual) is not VisionTransformer or getattr(visual, "output_tokens", False):
        return False
    transformer = visual.transformer
    if not getattr(transformer, "batch_first", False) or transformer.grad_checkpointing:
        return False
    for block in transformer.resblocks:
        attn = getattr(block, "attn", None)
        if (
            type(block) is not ResidualAttentionBlock
            or hasattr(block, "ln_1_kv")
            or not isinstance(attn, torch.nn.MultiheadAttention)
            or not attn._qkv_same_embed_dim
            or not attn.batch_first
            or attn.in_proj_bias is None
            or attn.bias_k is not None
            or (attn.dropout and block.training)
        ):
            return False
    return True


def _fast_block(block, x: torch.Tensor) -> torch.Tensor:
    """open_clip's ``ResidualAttentionBlock.forward`` (no mask), with the attention written out."""
    attn = block.attn
    y = block.ln_1(x)
    n, length, width = y.shape
    heads = attn.num_heads
    # One (N*L, D) x (D, 3D) matrix product for q, k and v. nn.MultiheadAttention transposes to
    # (L, N, D) first, and a linear layer on that strided view runs as a batched product over L with
    # the weight expanded L times; in bfloat16 that expansion is copied, 2.5x slower than this.
    qkv = F.linear(y, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(n, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    # 50 tokens: plain attention; its backward is faster on CPU than the fused kernel's.
    weights = ((q * (width // heads) ** -0.5) @ k.transpose(-1, -2)).softmax(-1)
    o = (weights @ v).transpose(1, 2).reshape(n, length, width)
    x = x + block.ls_1(F.linear(o, attn.out_proj.weight, attn.out_proj.bias))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def _fast_embeds(visual, x: torch.Tensor) -> torch.Tensor:
    """``VisionTransformer._embeds`` with the patch embedding as one matrix product.

    The patchify convolution (kernel = stride = patch size) is a reshape and a product with the
    kernel; its backward pass (a strided transposed convolution on CPU) was 13% of ViT-B-32's time.
    Falls back to ``visual._embeds`` for anything else.
    """
    conv = visual.conv1
    n, c, height, width = x.shape
    p = conv.kernel_size[0]
    plain = (
        conv.kernel_size == (p, p)
        and conv.stride == (p, p)
        and conv.padding in ((0, 0), "valid")
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and height % p == 0
        and width % p == 0
        and visual.positional_embedding.shape[0] == 1 + (height // p) * (width // p)
        and (not visual.training or isinstance(visual.patch_dropout, torch.nn.Identity))
    )
    if not plain:
        return visual._embeds(x)
    patches = x.reshape(n, c, height // p, p, width // p, p).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(n, (height // p) * (width // p), c * p * p)
    tokens = F.linear(patches, conv.weight.reshape(conv.out_channels, -1), conv.bias)
    cls = visual.class_embedding.view(1, 1, -1).expand(n, -1, -1).to(tokens.dtype)
    tokens = torch.cat([cls, tokens], dim=1) + visual.positional_embedding.to(tokens.dtype)
    return visual.ln_pre(visual.patch_dropout(tokens))


def encode_image_fast(visual, images: torch.Tensor) -> torch.Tensor:
    """``visual(images)`` for open_clip's ViT image towers, faster for the backward pass.

    Introduced in lesson 04_vqgan_clip.

    Same modules, same weights, same maths (equal to ``visual(images)`` to float rounding; tested in
    ``tests/test_speed.py``), with the attention's projections as plain matrix products (see
    ``_fast_block``). On a 2-core CPU, ViT-B-32 forward + backward on 8 cutouts took 0.97 s instead of
    1.17 s in float32, and 0.43 s in bfloat16 (BENCHMARKS.md). Towers it does not cover
    (``fast_vit_supported`` is False) run as usual.

    Example:
        >>> import open_clip
        >>> visual = open_clip.create_model("ViT-B-32").visual.eval()  # doctest: +SKIP
        >>> encode_image_fast(visual, torch.rand(2, 3, 224, 224)).shape  # doctest: +SKIP
        torch.Size([2, 512])
    """
    if not fast_vit_supported(visual):
        return visual(images)
    h = _fast_embeds(visual, images)
    for block in visual.transformer.resblocks:
        h = _fast_block(block, h)
    pooled, _ = visual._pool(h)
    return pooled @ visual.proj if visual.proj is not None else pooled
