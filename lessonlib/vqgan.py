"""VQGAN: a convolutional autoencoder whose latent grid is snapped to a learned codebook.

Introduced in lesson 04_vqgan_clip.

The model is assembled from ``taming.modules`` (the building blocks of taming-transformers: ``Encoder``,
``Decoder``, ``VectorQuantizer2``) with the same attribute names as taming's ``VQModel``
(``encoder``, ``quant_conv``, ``quantize``, ``post_quant_conv``, ``decoder``), so the state dict of an
official taming checkpoint (``vqgan_imagenet_f16_16384``, ``vqgan_imagenet_f16_1024``) loads as it is.

What is deliberately *not* used: ``taming.models`` (it imports a pytorch-lightning API that no longer
exists) and the ``target:`` class names in taming's yaml files (importing a class named in a downloaded
file would run code from the internet). From the yaml we read numbers only; from the ``.ckpt`` we read
tensors only (``lessonlib.checkpoints.read_state_dict``; see ``load_checkpoint_state``). The course's own
VQGANs are saved and loaded like every model it ships, by ``lessonlib.checkpoints`` (safetensors and a
``.json`` beside them).

Example:
    >>> cfg = VQGANConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, n_embed=64, embed_dim=16,
    ...                   z_channels=32, resolution=32, attn_resolutions=())
    >>> cfg.factor
    4
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

# One error class for every checkpoint lessonlib refuses (CLIPs and VQGANs alike).
from lessonlib.checkpoints import (
    WEIGHTS_DIR,
    CheckpointError,
    check_sha256,
    file_sha256,
    load_into,
    load_weights,
    read_state_dict,
    save_weights,
    verify_sha256,
)

TINY_VQGAN_WEIGHTS = WEIGHTS_DIR / "tiny_vqgan.safetensors"
REPRODUCE_COMMAND = "python -m lessonlib.train_tiny_vqgan"

# The two official ImageNet VQGANs of taming-transformers (Esser, Rombach & Ommer 2021). Files are
# ~1 GB each; `download_taming_vqgan` fetches them once into lessonlib's cache (pretrained mode only).
# No published hash for these files could be found from this project's sources (no network here), so
# "sha256" is None: download_taming_vqgan then records the first download's hash and checks it on every
# later use. Fill in a hash only after computing it from a downloaded file.
TAMING_VQGANS = {
    "vqgan_imagenet_f16_16384": {
        "sha256": None,
        "ckpt": "https://heibox.uni-heidelberg.de/d/a7530b09fed84f80a887/files/?p=%2Fckpts%2Flast.ckpt&dl=1",
        "yaml": "https://heibox.uni-heidelberg.de/d/a7530b09fed84f80a887/files/?p=%2Fconfigs%2Fmodel.yaml&dl=1",
    },
    "vqgan_imagenet_f16_1024": {
        "sha256": None,
        "ckpt": "https://heibox.uni-heidelberg.de/d/8088892a516d4e3baf92/files/?p=%2Fckpts%2Flast.ckpt&dl=1",
        "yaml": "https://heibox.uni-heidelberg.de/d/8088892a516d4e3baf92/files/?p=%2Fconfigs%2Fmodel.yaml&dl=1",
    },
}

# Globals that PyTorch-Lightning checkpoints of 2020-21 contain outside their "state_dict" (callback
# state, numpy scalars). They are replaced by an inert placeholder: nothing is imported, no code runs,
# and everything outside "state_dict" is thrown away. Any other global makes loading fail.
INERT_GLOBALS = frozenset(
    {
        "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
        "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
        "pytorch_lightning.callbacks.lr_monitor.LearningRateMonitor",
        "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.dtype",
        "argparse.Namespace",
    }
)


@dataclass
class VQGANConfig:
    """Architecture of a VQGAN: taming's ``ddconfig`` plus the codebook size.

    Introduced in lesson 04_vqgan_clip.

    ``factor`` (the downsampling factor f) is ``2 ** (len(ch_mult) - 1)``: an image of side ``s`` becomes
    a grid of ``s / f`` x ``s / f`` codes, each one of ``n_embed`` vectors of length ``embed_dim``.

    Example:
        >>> VQGANConfig.imagenet_f16_16384().factor
        16
    """

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    z_channels: int = 256
    resolution: int = 256
    n_embed: int = 16384
    embed_dim: int = 256
    in_channels: int = 3
    out_ch: int = 3
    dropout: float = 0.0
    extra: dict = field(default_factory=dict)  # provenance notes (not architecture)

    def __post_init__(self) -> None:
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions)
        for name in ("ch", "num_res_blocks", "z_channels", "resolution", "n_embed", "embed_dim"):
            value = getattr(self, name)
            low = 0 if name == "num_res_blocks" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"VQGANConfig.{name} must be an integer >= {low}, got {value!r}")
        if self.ch % 32 or self.z_channels % 32:
            raise ValueError(
                f"VQGANConfig.ch={self.ch} and z_channels={self.z_channels} must be multiples of 32 "
                "(taming's GroupNorm uses 32 groups)"
            )
        if not self.ch_mult or any(m < 1 for m in self.ch_mult):
            raise ValueError(f"VQGANConfig.ch_mult must be positive integers, got {self.ch_mult!r}")

    @property
    def factor(self) -> int:
        """Downsampling factor f: pixels per code along each side."""
        return 2 ** (len(self.ch_mult) - 1)

    def ddconfig(self) -> dict:
        """The keyword arguments of taming's ``Encoder`` / ``Decoder``."""
        return dict(
            double_z=False,
            z_channels=self.z_channels,
            resolution=self.resolution,
            in_channels=self.in_channels,
            out_ch=self.out_ch,
            ch=self.ch,
            ch_mult=list(self.ch_mult),
            num_res_blocks=self.num_res_blocks,
            attn_resolutions=list(self.attn_resolutions),
            dropout=self.dropout,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ch_mult"], d["attn_resolutions"] = list(self.ch_mult), list(self.attn_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VQGANConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise CheckpointError(
                f"unknown VQGAN config keys {unknown}: expected some of {sorted(known)}"
            )
        return cls(**d)

    @classmethod
    def imagenet_f16_16384(cls) -> VQGANConfig:
        """The architecture of taming's ``vqgan_imagenet_f16_16384`` (from its model.yaml)."""
        return cls(n_embed=16384)

    @classmethod
    def imagenet_f16_1024(cls) -> VQGANConfig:
        """The architecture of taming's ``vqgan_imagenet_f16_1024`` (from its model.yaml)."""
        return cls(n_embed=1024)


def config_from_taming_yaml(path: str | Path) -> VQGANConfig:
    """Read a taming ``model.yaml`` into a ``VQGANConfig``: numbers only, its ``target`` is never imported.

    Introduced in lesson 04_vqgan_clip.

    Example:
        >>> cfg = config_from_taming_yaml("vqgan_imagenet_f16_16384.yaml")  # doctest: +SKIP
        >>> cfg.n_embed  # doctest: +SKIP
        16384
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"VQGAN config '{path}' not found: give the model.yaml that came with the checkpoint "
            f"(or call download_taming_vqgan(name) for one of {', '.join(TAMING_VQGANS)})"
        )
    try:
        doc = yaml.safe_load(path.read_text())  # safe_load builds plain dicts/lists, never objects
    except yaml.YAMLError as err:
        raise CheckpointError(f"'{path}' is not valid YAML: {err}") from err
    try:
        target = doc["model"].get("target", "")
        params = doc["model"]["params"]
        dd = params["ddconfig"]
        n_embed, embed_dim = params["n_embed"], params["embed_dim"]
    except (KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(
            f"'{path}' is not a taming VQGAN config: it needs model.params.ddconfig, "
            f"model.params.n_embed and model.params.embed_dim (missing {err})"
        ) from err
    # The class name is only compared as text, to refuse models this module cannot build.
    if not str(target).endswith("VQModel"):
        raise CheckpointError(
            f"'{path}' describes a {target!r}; lessonlib builds plain taming VQModels "
            "(taming.models.vqgan.VQModel, e.g. vqgan_imagenet_f16_16384 / f16_1024)"
        )
    if dd.get("double_z", False):
        raise CheckpointError(f"'{path}' has double_z=true (a KL autoencoder), not a VQGAN")
    return VQGANConfig(
        ch=dd["ch"],
        ch_mult=tuple(dd["ch_mult"]),
        num_res_blocks=dd["num_res_blocks"],
        attn_resolutions=tuple(dd.get("attn_resolutions", ())),
        z_channels=dd["z_channels"],
        resolution=dd["resolution"],
        in_channels=dd.get("in_channels", 3),
        out_ch=dd.get("out_ch", 3),
        dropout=float(dd.get("dropout", 0.0)),
        n_embed=int(n_embed),
        embed_dim=int(embed_dim),
        extra={"source": str(path.name)},
    )


class VQGAN(nn.Module):
    """Encoder -> 1x1 conv -> nearest codebook vector -> 1x1 conv -> decoder, built from taming.modules.

    Introduced in lesson 04_vqgan_clip.

    Images are float tensors in [-1, 1] (taming's convention), shape (B, 3, H, W) with H and W
    multiples of ``config.factor``.

    Example:
        >>> cfg = VQGANConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, n_embed=32, embed_dim=8,
        ...                   z_channels=32, resolution=16, attn_resolutions=())
        >>> model = VQGAN(cfg)
        >>> x = torch.zeros(1, 3, 16, 16)
        >>> model.decode_codes(model.encode_to_codes(x)).shape
        torch.Size([1, 3, 16, 16])
    """

    def __init__(
        self, config: VQGANConfig, legacy_beta: bool = True, with_encoder: bool = True
    ) -> None:
        super().__init__()
        from taming.modules.diffusionmodules.model import Decoder, Encoder
        from taming.modules.vqvae.quantize import VectorQuantizer2

        self.config = config
        dd = config.ddconfig()
        with contextlib.redirect_stdout(io.StringIO()):  # taming prints the z shape on construction
            # Generation from random codes never encodes: without the encoder the f16 VQGAN is ~90 MB
            # smaller (``with_encoder=False``, or ``drop_encoder()`` later).
            self.encoder = Encoder(**dd) if with_encoder else None
            self.decoder = Decoder(**dd)
        self.quantize = VectorQuantizer2(
            config.n_embed, config.embed_dim, beta=0.25, legacy=legacy_beta
        )
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    @property
    def factor(self) -> int:
        return self.config.factor

    @property
    def codebook(self) -> torch.Tensor:
        """The (n_embed, embed_dim) codebook."""
        return self.quantize.embedding.weight

    @property
    def has_encoder(self) -> bool:
        return self.encoder is not None

    def drop_encoder(self) -> VQGAN:
        """Free the encoder's weights (generation from random codes needs only the decoder)."""
        self.encoder = None
        return self

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous latents before quantisation, (B, embed_dim, H/f, W/f)."""
        if self.encoder is None:
            raise ValueError(
                "this VQGAN was loaded without its encoder (with_encoder=False or drop_encoder()), so "
                "it cannot encode images (e.g. an init image): load it again with with_encoder=True"
            )
        return self.quant_conv(self.encoder(x))

    def nearest_codes(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codebook vector at every grid cell: (B, h, w) integers."""
        flat = z.movedim(1, -1).reshape(-1, z.shape[1])
        book = self.codebook
        d = flat.pow(2).sum(1, keepdim=True) + book.pow(2).sum(1) - 2 * flat @ book.T
        return d.argmin(1).view(z.shape[0], z.shape[2], z.shape[3])

    def codes_to_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """Codebook vectors of a (B, h, w) index grid, as (B, embed_dim, h, w)."""
        return self.codebook[codes].movedim(-1, 1)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] (roughly) from quantised latents (B, embed_dim, h, w)."""
        return self.decoder(self.post_quant_conv(z_q))

    def encode_to_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] -> (B, h, w) code indices."""
        return self.nearest_codes(self.encode(x))

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) code indices -> image in [-1, 1]."""
        return self.decode(self.codes_to_latents(codes))

    def forward(self, x: torch.Tensor):
        """Reconstruction, VQ loss (codebook + beta * commitment) and code indices, as in taming."""
        z_q, vq_loss, (_, _, indices) = self.quantize(self.encode(x))
        return self.decode(z_q), vq_loss, indices.view(x.shape[0], -1)


# ----------------------------------------------------------------------------------------- loading


def load_checkpoint_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The model tensors of a taming ``.ckpt`` (or a ``.safetensors``), without importing any code.

    Introduced in lesson 04_vqgan_clip.

    Read by ``lessonlib.checkpoints.read_state_dict``: ``torch.load(weights_only=True)`` refuses any
    pickled global that is not a plain tensor or container. Lightning checkpoints name a few harmless ones (the ``ModelCheckpoint`` callback's class,
    numpy scalars); those listed in ``INERT_GLOBALS`` are swapped for placeholders that run nothing, and
    any other global is refused with a ``CheckpointError``. The discriminator/LPIPS weights (``loss.*``)
    are dropped.

    Example:
        >>> state = load_checkpoint_state("last.ckpt")  # doctest: +SKIP
        >>> "quantize.embedding.weight" in state  # doctest: +SKIP
        True
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"VQGAN checkpoint '{path}' not found: give the path of a taming .ckpt or a .safetensors "
            f"file (download_taming_vqgan(name) fetches one of {', '.join(TAMING_VQGANS)}; "
            f"`{REPRODUCE_COMMAND}` rebuilds the tiny one)"
        )
    state = read_state_dict(path, inert_globals=INERT_GLOBALS)
    return {k: v for k, v in state.items() if not k.startswith("loss.")}


def build_vqgan(
    config: VQGANConfig,
    state: dict[str, torch.Tensor],
    source: str = "state",
    with_encoder: bool = True,
) -> VQGAN:
    """A frozen, eval-mode ``VQGAN`` with ``state`` loaded; mismatches are reported by name and shape.

    Introduced in lesson 04_vqgan_clip.

    With ``with_encoder=False`` the encoder is neither built nor loaded (its weights in ``state`` are
    skipped): enough for generating from random codes, and lighter. Keys and shapes are checked by
    ``lessonlib.checkpoints.load_into``.

    Example:
        >>> cfg = VQGANConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, n_embed=16, embed_dim=8,
        ...                   z_channels=32, resolution=16, attn_resolutions=())
        >>> build_vqgan(cfg, VQGAN(cfg).state_dict()).factor
        2
    """
    model = VQGAN(config, with_encoder=with_encoder)
    if not with_encoder:
        state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
    load_into(model, state, source, hint="Use the yaml that came with the checkpoint.")
    return model.eval().requires_grad_(False)


def load_taming_vqgan(
    ckpt_path: str | Path, yaml_path: str | Path, with_encoder: bool = True
) -> VQGAN:
    """Load an official taming VQGAN (``last.ckpt`` + ``model.yaml``) without pytorch-lightning.

    Introduced in lesson 04_vqgan_clip.

    Example:
        >>> vqgan = load_taming_vqgan("vqgan_imagenet_f16_16384.ckpt",
        ...                           "vqgan_imagenet_f16_16384.yaml")  # doctest: +SKIP
        >>> vqgan.factor  # doctest: +SKIP
        16
    """
    config = config_from_taming_yaml(yaml_path)
    state = load_checkpoint_state(ckpt_path)
    return build_vqgan(config, state, source=f"'{ckpt_path}'", with_encoder=with_encoder)


def download_taming_vqgan(
    name: str = "vqgan_imagenet_f16_16384", sha256: str | None = None, mode: str | None = None
) -> tuple[Path, Path]:
    """Download (once) an official taming VQGAN into lessonlib's cache: ``(ckpt_path, yaml_path)``.

    Introduced in lesson 04_vqgan_clip. Pretrained mode only: in offline mode it raises at once
    instead of waiting for a network that is not there.

    The checkpoint is pinned by sha256. ``sha256`` (or the hash in ``TAMING_VQGANS``, where the course
    knows one) is checked before the file is used. Without one, the hash of the first complete
    download is written beside it (``last.ckpt.sha256``, and ``model.yaml.sha256`` for the config) and
    every later call checks the cached files against them, so a damaged or swapped file is refused
    instead of loaded.

    Example:
        >>> ckpt, yaml_path = download_taming_vqgan("vqgan_imagenet_f16_16384")  # doctest: +SKIP
    """
    from lessonlib.environment import cache_dir, get_mode

    if name not in TAMING_VQGANS:
        raise ValueError(f"unknown VQGAN {name!r}: choose one of {', '.join(TAMING_VQGANS)}")
    expected = sha256 or TAMING_VQGANS[name].get("sha256")
    if expected is not None:  # a malformed hash is refused before anything is downloaded
        expected = check_sha256(expected)
    folder = cache_dir() / "vqgan" / name
    ckpt, yml = folder / "last.ckpt", folder / "model.yaml"

    def recorded(path: Path) -> Path:
        return path.with_name(path.name + ".sha256")

    if ckpt.is_file() and yml.is_file():
        for path in (ckpt, yml):
            known = expected if path == ckpt else None
            if known is None and recorded(path).is_file():
                known = recorded(path).read_text().split()[0]
            if known:
                verify_sha256(path, known)
        return ckpt, yml
    if (get_mode() if mode is None else mode) == "offline":
        raise FileNotFoundError(
            f"{name} is not in the cache ('{folder}') and lessonlib is in offline mode: run "
            "lessonlib.setup(mode='pretrained') with internet, or use the tiny VQGAN (load_tiny_vqgan())"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for url, dest in ((TAMING_VQGANS[name]["yaml"], yml), (TAMING_VQGANS[name]["ckpt"], ckpt)):
        if not dest.is_file():
            tmp = dest.with_suffix(dest.suffix + ".part")
            torch.hub.download_url_to_file(url, str(tmp), progress=True)
            if dest == ckpt and expected:
                try:
                    verify_sha256(tmp, expected)
                except ValueError:  # CheckpointError: the wrong file; keep nothing of it
                    tmp.unlink(missing_ok=True)
                    raise
            recorded(dest).write_text(f"{file_sha256(tmp)}  {dest.name}\n")
            tmp.replace(dest)
    return ckpt, yml


def load_pretrained_vqgan(
    name: str = "vqgan_imagenet_f16_16384", with_encoder: bool = True, mode: str | None = None
) -> VQGAN:
    """``download_taming_vqgan`` + ``load_taming_vqgan``. Introduced in lesson 04_vqgan_clip.

    ``mode`` (``cfg.mode`` from ``setup()``) says whether the network may be used; without it the mode
    ``setup()`` chose is read back.

    Example:
        >>> vqgan = load_pretrained_vqgan(with_encoder=False, mode=cfg.mode)  # doctest: +SKIP
    """
    ckpt, yml = download_taming_vqgan(name, mode=mode)
    return load_taming_vqgan(ckpt, yml, with_encoder=with_encoder)


def save_vqgan(
    model: VQGAN,
    path: str | Path,
    extra: dict | None = None,
    half: bool = False,
    command: str | None = None,
) -> Path:
    """Save weights as safetensors and the config beside them as ``.json`` (same name).

    Introduced in lesson 04_vqgan_clip. ``lessonlib.checkpoints.save_weights`` with the VQGAN's
    config; ``command`` (the shell command that made the weights) and ``extra`` (measurements) go into
    the ``.json`` too.

    Example:
        >>> save_vqgan(model, "/tmp/my_vqgan.safetensors", command="python make.py")  # doctest: +SKIP
    """
    return save_weights(
        model, path, model.config.to_dict(), command=command, half=half, extra=extra
    )


def load_vqgan(path: str | Path | None = None) -> VQGAN:
    """Load a VQGAN saved by ``save_vqgan`` (default: the shipped tiny Shapes World VQGAN).

    Introduced in lesson 04_vqgan_clip. The config comes from the ``.json`` beside the weights
    (``lessonlib.checkpoints.weights_info`` reads it, with the command that made them); the weights
    come back frozen, in eval mode, in float32.

    Example:
        >>> vqgan = load_vqgan()
        >>> vqgan.factor
        4
    """
    path = TINY_VQGAN_WEIGHTS if path is None else Path(path)
    model, _ = load_weights(
        path,
        lambda config: VQGAN(VQGANConfig.from_dict(config)),
        what="VQGAN",
        reproduce=REPRODUCE_COMMAND,
    )
    return model.requires_grad_(False)


load_tiny_vqgan = load_vqgan
