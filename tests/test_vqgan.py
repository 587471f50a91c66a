"""lessonlib.vqgan: taming-format checkpoints load without Lightning and without importing code."""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lessonlib import vqgan as V
from lessonlib.checkpoints import weights_info

SMALL = dict(
    ch=32,
    ch_mult=(1, 2, 2),
    num_res_blocks=1,
    attn_resolutions=(8,),
    z_channels=32,
    resolution=32,
    n_embed=64,
    embed_dim=16,
)

# taming's configs/vqgan_imagenet_f16_16384 model.yaml, abridged (the keys lessonlib reads, the target
# classes it must not import, and the loss section it ignores).
TAMING_YAML = """
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.VQModel
  params:
    embed_dim: {embed_dim}
    n_embed: {n_embed}
    monitor: val/rec_loss
    ddconfig:
      double_z: false
      z_channels: {z_channels}
      resolution: {resolution}
      in_channels: 3
      out_ch: 3
      ch: {ch}
      ch_mult: {ch_mult}
      num_res_blocks: {num_res_blocks}
      attn_resolutions: {attn_resolutions}
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator
      params:
        disc_conditional: false
        disc_in_channels: 3
        disc_start: 250001
        disc_weight: 0.8
        codebook_weight: 1.0
"""


def write_yaml(path, cfg: dict) -> None:
    text = TAMING_YAML.format(**{k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()})
    path.write_text(text)


@pytest.fixture
def fake_lightning(monkeypatch):
    """A stand-in `pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`, so that a test can
    pickle a checkpoint exactly like Lightning writes one, whether or not Lightning is installed."""
    name = "pytorch_lightning.callbacks.model_checkpoint"
    fake = types.ModuleType(name)

    class ModelCheckpoint:
        pass

    ModelCheckpoint.__module__ = name
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    fake.ModelCheckpoint = ModelCheckpoint
    for mod in ("pytorch_lightning", "pytorch_lightning.callbacks"):
        monkeypatch.setitem(sys.modules, mod, types.ModuleType(mod))
    monkeypatch.setitem(sys.modules, name, fake)
    return ModelCheckpoint


def lightning_checkpoint(model: V.VQGAN, callback_cls) -> dict:
    """A checkpoint in the layout of taming's last.ckpt: Lightning metadata, callback state holding
    numpy scalars, optimizer state, and a state_dict with the loss (discriminator) weights."""
    state = dict(model.state_dict())
    state["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    state["loss.perceptual_loss.lin0.model.1.weight"] = torch.randn(1, 64, 1, 1)
    return {
        "epoch": 4,
        "global_step": 1234,
        "pytorch-lightning_version": "1.0.8",
        "callbacks": {callback_cls: {"best_model_score": np.float64(0.25), "dirpath": "logs/"}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-6, "params": [0, 1]}]}],
        "lr_schedulers": [],
        "state_dict": state,
    }


def test_config_factor_and_validation():
    assert V.VQGANConfig(**SMALL).factor == 4
    assert V.VQGANConfig.imagenet_f16_16384().factor == 16
    assert V.VQGANConfig.imagenet_f16_1024().n_embed == 1024
    with pytest.raises(ValueError, match="n_embed"):
        V.VQGANConfig(**{**SMALL, "n_embed": 0})
    with pytest.raises(ValueError, match="multiples of 32"):
        V.VQGANConfig(**{**SMALL, "ch": 16})


def test_state_dict_keys_match_taming_vqmodel():
    """Same parameter names as taming.models.vqgan.VQModel (minus its loss): checked against the
    module names taming's VQModel.__init__ assigns."""
    model = V.VQGAN(V.VQGANConfig(**SMALL))
    prefixes = {k.split(".")[0] for k in model.state_dict()}
    assert prefixes == {"encoder", "decoder", "quantize", "quant_conv", "post_quant_conv"}
    assert model.state_dict()["quantize.embedding.weight"].shape == (64, 16)


def test_taming_format_checkpoint_round_trip(tmp_path, fake_lightning):
    torch.manual_seed(0)
    model = V.VQGAN(V.VQGANConfig(**SMALL)).eval()
    torch.save(lightning_checkpoint(model, fake_lightning), tmp_path / "last.ckpt")
    write_yaml(tmp_path / "model.yaml", SMALL)
    # Plain weights_only loading refuses this file: that is the case the loader exists for.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "last.ckpt", weights_only=True)

    loaded = V.load_taming_vqgan(tmp_path / "last.ckpt", tmp_path / "model.yaml")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        want, _, want_idx = model(x)
        got, _, got_idx = loaded(x)
    assert torch.equal(want_idx, got_idx)
    assert torch.allclose(want, got, atol=1e-6)
    assert not any(p.requires_grad for p in loaded.parameters())
    assert not loaded.training


def test_real_f16_16384_architecture_loads_from_taming_format(tmp_path, fake_lightning):
    """The full-size architecture (random weights): every key and shape of an f16_16384 checkpoint."""
    cfg = V.VQGANConfig.imagenet_f16_16384()
    torch.manual_seed(0)
    model = V.VQGAN(cfg).eval()
    torch.save(lightning_checkpoint(model, fake_lightning), tmp_path / "last.ckpt")
    write_yaml(tmp_path / "model.yaml", cfg.to_dict())
    loaded = V.load_taming_vqgan(tmp_path / "last.ckpt", tmp_path / "model.yaml")
    assert loaded.config.n_embed == 16384 and loaded.factor == 16
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    codes = torch.randint(16384, (1, 2, 2))
    with torch.no_grad():
        assert loaded.decode_codes(codes).shape == (1, 3, 32, 32)


def test_plain_state_dict_and_safetensors_load(tmp_path):
    model = V.VQGAN(V.VQGANConfig(**SMALL))
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    state = V.load_checkpoint_state(tmp_path / "plain.pt")
    assert set(state) == set(model.state_dict())
    V.save_vqgan(model, tmp_path / "m.safetensors", extra={"note": "test"})
    again = V.load_vqgan(tmp_path / "m.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])


_CALLED = []


def _payload(*args):  # what a malicious checkpoint would run
    _CALLED.append(args)
    return "pwned"


class _Evil:
    def __reduce__(self):
        return (_payload, ("rm -rf",))


def test_checkpoint_with_unknown_global_is_refused_and_nothing_runs(tmp_path):
    model = V.VQGAN(V.VQGANConfig(**SMALL))
    ckpt = {"state_dict": dict(model.state_dict()), "hyper_parameters": _Evil()}
    torch.save(ckpt, tmp_path / "evil.ckpt")
    write_yaml(tmp_path / "model.yaml", SMALL)
    with pytest.raises(V.CheckpointError, match="_payload") as err:
        V.load_taming_vqgan(tmp_path / "evil.ckpt", tmp_path / "model.yaml")
    assert "will not import" in str(err.value)
    assert _CALLED == []


def test_yaml_target_is_never_imported(tmp_path, monkeypatch):
    """A yaml whose target names a module that would explode on import is read for numbers only."""
    text = TAMING_YAML.format(
        **{k: list(v) if isinstance(v, tuple) else v for k, v in SMALL.items()}
    )
    text = text.replace(
        "target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
        "target: evil_module_that_must_not_be_imported.Boom",
    )
    (tmp_path / "model.yaml").write_text(text)
    cfg = V.config_from_taming_yaml(tmp_path / "model.yaml")
    assert cfg.n_embed == 64 and cfg.ch_mult == (1, 2, 2)
    assert "evil_module_that_must_not_be_imported" not in sys.modules


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        V.load_checkpoint_state(tmp_path / "missing.ckpt")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        V.config_from_taming_yaml(tmp_path / "nope.yaml")
    with pytest.raises(FileNotFoundError, match="train_tiny_vqgan"):
        V.load_vqgan(tmp_path / "absent.safetensors")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(V.CheckpointError, match="junk.ckpt"):
        V.load_checkpoint_state(tmp_path / "junk.ckpt")
    (tmp_path / "gumbel.yaml").write_text(
        yaml.safe_dump(
            {
                "model": {
                    "target": "taming.models.vqgan.GumbelVQ",
                    "params": {"n_embed": 8192, "embed_dim": 256, "ddconfig": {"ch": 128}},
                }
            }
        )
    )
    with pytest.raises(V.CheckpointError, match="GumbelVQ"):
        V.config_from_taming_yaml(tmp_path / "gumbel.yaml")
    (tmp_path / "other.yaml").write_text("data: {}\n")
    with pytest.raises(V.CheckpointError, match="model.params.ddconfig"):
        V.config_from_taming_yaml(tmp_path / "other.yaml")
    # Weights that do not fit the yaml: the message names the key and both shapes.
    model = V.VQGAN(V.VQGANConfig(**SMALL))
    torch.save({"state_dict": model.state_dict()}, tmp_path / "m.ckpt")
    write_yaml(tmp_path / "big.yaml", {**SMALL, "n_embed": 128})
    with pytest.raises(
        V.CheckpointError, match=r"quantize.embedding.weight.*\(64, 16\).*\(128, 16\)"
    ):
        V.load_taming_vqgan(tmp_path / "m.ckpt", tmp_path / "big.yaml")


def test_download_refuses_in_offline_mode(monkeypatch, tmp_path):
    monkeypatch.setenv("LESSONLIB_MODE", "offline")
    monkeypatch.setenv("LESSONLIB_CACHE", str(tmp_path))
    import lessonlib.environment as env

    monkeypatch.setattr(env, "_current", None)
    with pytest.raises(FileNotFoundError, match="offline"):
        V.download_taming_vqgan("vqgan_imagenet_f16_16384")
    with pytest.raises(ValueError, match="vqgan_imagenet_f16_1024"):
        V.download_taming_vqgan("f16_99")
    monkeypatch.setenv("LESSONLIB_MODE", "pretrained")  # the mode passed in wins
    with pytest.raises(FileNotFoundError, match="offline"):
        V.download_taming_vqgan("vqgan_imagenet_f16_16384", mode="offline")


def test_download_pins_the_checkpoint_by_sha256(monkeypatch, tmp_path):
    """First download records the hash; a later swap of the cached file is refused; a wrong known hash
    deletes the download and raises, keeping no half-trusted file."""
    import torch

    from lessonlib.checkpoints import CheckpointError, file_sha256

    monkeypatch.setenv("LESSONLIB_MODE", "pretrained")
    monkeypatch.setenv("LESSONLIB_CACHE", str(tmp_path))
    import lessonlib.environment as env

    monkeypatch.setattr(env, "_current", None)
    calls = []

    def fake_download(url, dst, progress=True):
        calls.append(url)
        Path(dst).write_bytes(b"yaml" if "yaml" in url else b"checkpoint bytes")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    ckpt, yml = V.download_taming_vqgan("vqgan_imagenet_f16_1024")
    assert len(calls) == 2 and ckpt.read_bytes() == b"checkpoint bytes"
    recorded = ckpt.with_name("last.ckpt.sha256").read_text().split()[0]
    assert recorded == file_sha256(ckpt)
    assert V.download_taming_vqgan("vqgan_imagenet_f16_1024") == (ckpt, yml) and len(calls) == 2
    yml.write_text("model: {}")  # a swapped config is refused too
    with pytest.raises(CheckpointError, match="model.yaml"):
        V.download_taming_vqgan("vqgan_imagenet_f16_1024")
    yml.write_bytes(b"yaml")
    ckpt.write_bytes(b"something else")  # a damaged or swapped cache file
    with pytest.raises(CheckpointError, match="last.ckpt"):
        V.download_taming_vqgan("vqgan_imagenet_f16_1024")
    # A known hash that the download does not match: the file is removed, nothing is cached.
    wrong = "0" * 64
    with pytest.raises(CheckpointError, match=wrong):
        V.download_taming_vqgan("vqgan_imagenet_f16_16384", sha256=wrong)
    folder = tmp_path / "vqgan" / "vqgan_imagenet_f16_16384"
    assert not (folder / "last.ckpt").exists() and not list(folder.glob("*.part"))
    with pytest.raises(ValueError, match="64 hexadecimal"):
        V.download_taming_vqgan("vqgan_imagenet_f16_16384", sha256="abc")
    assert len(calls) == 4  # the malformed hash was refused before any download


def test_shipped_tiny_vqgan_reconstructs_shapes_world():
    """The shipped weights load, are small, and reconstruct unseen Shapes World images well."""
    from lessonlib.train_tiny_vqgan import evaluate, make_images

    assert V.TINY_VQGAN_WEIGHTS.stat().st_size <= 10_000_000
    model = V.load_vqgan()
    assert model.factor == 4
    quality = evaluate(model, make_images(200, seed=4242))
    assert quality["psnr_db"] > 24, quality
    info = weights_info(V.TINY_VQGAN_WEIGHTS)  # the .json beside the shipped weights, as shipped
    assert info["command"].startswith("python -m lessonlib.train_tiny_vqgan")


def test_decoder_only_load_skips_the_encoder(tmp_path, fake_lightning):
    """with_encoder=False: no encoder weights built or loaded, decoding identical, encoding refused."""
    torch.manual_seed(0)
    model = V.VQGAN(V.VQGANConfig(**SMALL)).eval()
    torch.save(lightning_checkpoint(model, fake_lightning), tmp_path / "last.ckpt")
    write_yaml(tmp_path / "model.yaml", SMALL)
    lean = V.load_taming_vqgan(tmp_path / "last.ckpt", tmp_path / "model.yaml", with_encoder=False)
    assert not lean.has_encoder and model.has_encoder
    assert not any(k.startswith("encoder.") for k in lean.state_dict())
    n_full = sum(p.numel() for p in model.parameters())
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    assert sum(p.numel() for p in lean.parameters()) == n_full - n_enc
    codes = torch.randint(64, (1, 8, 8))
    with torch.no_grad():
        assert torch.equal(model.decode_codes(codes), lean.decode_codes(codes))
    with pytest.raises(ValueError, match="without its encoder.*with_encoder=True"):
        lean.encode(torch.zeros(1, 3, 32, 32))
    assert model.drop_encoder() is model and not model.has_encoder


def test_checkpoint_is_memory_mapped_where_possible(tmp_path, monkeypatch):
    """Taming .ckpt files are mostly discriminator/LPIPS weights: they are mapped, not read whole."""
    model = V.VQGAN(V.VQGANConfig(**SMALL))
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("mmap"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    state = V.load_checkpoint_state(tmp_path / "plain.pt")
    assert calls == [True] and set(state) == set(model.state_dict())
    # A legacy (non-zip) file cannot be mapped: it is read whole instead of failing.
    torch.save(model.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    calls.clear()
    state = V.load_checkpoint_state(tmp_path / "legacy.pt")
    assert calls == [True, None] and set(state) == set(model.state_dict())


def test_tiny_vqgan_trainer_takes_other_architectures(tmp_path):
    from lessonlib import train_tiny_vqgan as T

    model, facts = T.train(
        steps=2, batch_size=4, n_train=16, progress=False, config_overrides={"ch_mult": (1, 1)}
    )
    assert model.factor == 2 and facts["steps"] == 2
    assert model.encode_to_codes(torch.zeros(1, 3, 32, 32)).shape == (1, 16, 16)
    with pytest.raises(SystemExit):
        T.main(["--ch-mult", "1,x", "--out", str(tmp_path / "v.safetensors")])
    with pytest.raises(ValueError, match="multiples of 32"):
        T.train(steps=1, n_train=4, progress=False, config_overrides={"ch": 16})
