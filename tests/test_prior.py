"""lessonlib.prior: the tiny code prior (a GPT over VQGAN codes), its trainer, and ``draw``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lessonlib import generate as G
from lessonlib.checkpoints import CheckpointError, file_sha256, weights_info
from lessonlib.prior import (
    CodePrior,
    PriorConfig,
    check_compatible,
    codes_to_images,
    draw,
    load_prior,
    save_prior,
)
from lessonlib.vqgan import VQGAN, VQGANConfig, save_vqgan

F2 = dict(
    ch=32,
    ch_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(),
    z_channels=32,
    resolution=16,
    n_embed=32,
    embed_dim=8,
)


def small_prior(**kw) -> CodePrior:
    torch.manual_seed(0)
    cfg = dict(n_codes=32, grid=(4, 4), d_model=32, n_layer=2, n_head=2)
    cfg.update(kw)
    return CodePrior(PriorConfig(**cfg)).eval()


@pytest.fixture(scope="module")
def f2_vqgan():
    torch.manual_seed(0)
    return VQGAN(VQGANConfig(**F2)).eval().requires_grad_(False)


def test_cached_sampling_agrees_with_the_full_forward_pass(one_torch_thread):
    prior = small_prior()
    codes = prior.sample(["a red circle", "a small blue square"], n=2, top_k=1, seed=3)
    assert codes.shape == (4, 4, 4)
    text = prior.encode_text(["a red circle"] * 2 + ["a small blue square"] * 2)
    logits = prior(text, codes.reshape(4, -1))
    # Greedy sampling with the k/v cache must pick, at every position, the full pass's argmax.
    assert torch.equal(logits.argmax(-1), codes.reshape(4, -1))


def test_sampling_is_seeded_and_guidance_zero_ignores_the_caption(one_torch_thread):
    prior = small_prior()
    a = prior.sample("a red circle", n=3, seed=1)
    assert torch.equal(a, prior.sample("a red circle", n=3, seed=1))
    assert not torch.equal(a, prior.sample("a red circle", n=3, seed=2))
    # guidance 0 samples the blank-caption model: the prompt no longer matters.
    u1 = prior.sample("a red circle", n=2, seed=5, guidance=0.0)
    u2 = prior.sample("a large green cross", n=2, seed=5, guidance=0.0)
    assert torch.equal(u1, u2)


def test_prior_learns_captions_to_grids_and_guidance_follows_them(one_torch_thread):
    prior = small_prior()
    prior.train()
    grids = torch.tensor([[1] * 8 + [2] * 8, [5, 6, 7, 8] * 4])
    text = prior.encode_text(["a red circle", "a blue cross"])
    opt = torch.optim.Adam(prior.parameters(), lr=3e-3)
    first = prior.loss(text, grids).item()
    for step in range(150):
        t = text.clone()
        if step % 4 == 0:  # blank captions now and then, as the trainer does
            t[1] = 0
        loss = prior.loss(t, grids)
        opt.zero_grad()
        loss.backward()
        opt.step()
    prior.eval()
    assert prior.loss(text, grids).item() < first / 10
    got = prior.sample(["a red circle", "a blue cross"], n=1, top_k=1)
    assert torch.equal(got.reshape(2, -1), grids)
    got = prior.sample(["a red circle", "a blue cross"], n=2, guidance=3.0, temperature=0.5, seed=4)
    assert torch.equal(got.reshape(4, -1), grids.repeat_interleave(2, 0))
    blank = prior.sample(["a red circle", "a blue cross"], n=1, guidance=0.0, seed=4)
    assert torch.equal(blank[0], blank[1])  # guidance 0: the caption is ignored
    ll = prior.log_likelihood(["a red circle", "a red circle"], grids.view(2, 4, 4))
    assert ll[0] > ll[1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prompts=""), "non-empty"),
        (dict(prompts="a red zebra"), "zebra"),
        (dict(prompts=["a red circle", 3]), "non-empty string"),
        (dict(prompts="a red circle", n=0), "n must be"),
        (dict(prompts="a red circle", temperature=0), "temperature"),
        (dict(prompts="a red circle", top_k=0), "top_k"),
        (dict(prompts="a red circle", top_k=33), "top_k"),
        (dict(prompts="a red circle", guidance=-1), "guidance"),
        (dict(prompts="a red circle", seed=-1), "seed"),
    ],
)
def test_bad_sampling_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small_prior().sample(**kwargs)


def test_bad_configs_and_shapes():
    with pytest.raises(ValueError, match="multiple of n_head"):
        PriorConfig(d_model=30, n_head=4)
    with pytest.raises(ValueError, match="p_uncond"):
        PriorConfig(p_uncond=1.0)
    with pytest.raises(ValueError, match="grid"):
        PriorConfig(grid=(0, 4))
    prior = small_prior()
    with pytest.raises(ValueError, match="text must be"):
        prior(torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 16, dtype=torch.long))


def test_save_load_and_the_vqgan_pin(tmp_path, f2_vqgan):
    prior = small_prior(grid=(8, 8))
    vq = save_vqgan(f2_vqgan, tmp_path / "vq.safetensors")

    path = save_prior(
        prior,
        tmp_path / "p.safetensors",
        extra={"vqgan": "vq.safetensors", "vqgan_sha256": file_sha256(vq)},
    )
    loaded, vqgan = load_prior(path)
    assert vqgan.config.n_embed == 32
    assert torch.equal(loaded.sample("a red circle", seed=2), prior.sample("a red circle", seed=2))
    # Another VQGAN's codes mean other pictures: refused by hash.
    other = VQGAN(VQGANConfig(**F2)).eval()
    save_vqgan(other, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="different file"):
        load_prior(path, tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError, match="train_tiny_prior"):
        load_prior(tmp_path / "missing.safetensors")
    (tmp_path / "lonely.safetensors").write_bytes(path.read_bytes())
    with pytest.raises(FileNotFoundError, match="config not found"):
        load_prior(tmp_path / "lonely.safetensors")
    (tmp_path / "noconf.safetensors").write_bytes(path.read_bytes())
    (tmp_path / "noconf.json").write_text('{"command": "x"}')
    with pytest.raises(CheckpointError, match="no 'config' entry"):
        load_prior(tmp_path / "noconf.safetensors")
    info = json.loads(path.with_suffix(".json").read_text())
    info["config"]["d_model"] = 64
    (tmp_path / "bad.json").write_text(json.dumps(info))
    (tmp_path / "bad.safetensors").write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match="does not match"):
        load_prior(tmp_path / "bad.safetensors")


def test_check_compatible_names_the_mismatch(f2_vqgan):
    check_compatible(small_prior(grid=(8, 8)), f2_vqgan)  # 16 px / factor 2, 32 codes
    with pytest.raises(ValueError, match="grids of 64 codes"):
        check_compatible(small_prior(grid=(8, 8), n_codes=64), f2_vqgan)
    with pytest.raises(ValueError, match=r"\(4, 4\) grids"):
        check_compatible(small_prior(), f2_vqgan)


def test_generate_starts_from_init_codes(f2_vqgan, tiny_clip_model):
    clip_model, preprocess, tokenizer = tiny_clip_model

    def start_from(**kw):
        args = dict(size=16, steps=1, cutn=2, progress=False)
        args.update(kw)
        return G.generate("a red circle", f2_vqgan, clip_model, tokenizer, preprocess, **args)

    codes = torch.randint(32, (1, 8, 8), generator=torch.Generator().manual_seed(0))
    result = start_from(steps=2, cutn=4, init_codes=codes, frame_every=1, precision="float32")
    start = codes_to_images(f2_vqgan, codes)[0].mul(255).round().byte().permute(1, 2, 0)
    assert np.abs(np.asarray(result.frames[0]).astype(int) - start.numpy().astype(int)).max() <= 1

    for bad, match in [
        (codes.float(), "integer tensor"),
        (codes[:, :4], r"needs \(1, 8, 8\)"),
        (codes + 100, r"\[0, 31\]"),
        ([[1, 2]], "integer tensor"),
    ]:
        with pytest.raises(ValueError, match=match):
            start_from(init_codes=bad)
    with pytest.raises(ValueError, match="not both"):
        start_from(init_codes=codes, init_image=torch.zeros(16, 16, 3).numpy())


@pytest.fixture(scope="module")
def tiny_clip_model():
    from lessonlib.models import load_tiny_clip

    return load_tiny_clip()


def test_draw_reranks_with_clip_and_refines(f2_vqgan, tiny_clip_model, one_torch_thread):
    clip_model, preprocess, tokenizer = tiny_clip_model
    prior = small_prior(grid=(8, 8))
    out = draw("a red circle", prior, f2_vqgan, clip_model, tokenizer, preprocess, candidates=3)
    assert len(out.candidates) == 3 and len(out.scores) == 3
    assert out.chosen == max(range(3), key=out.scores.__getitem__)
    assert out.image is out.candidates[out.chosen]
    alone = draw("a red circle", prior, f2_vqgan, candidates=3)
    assert alone.scores == [] and alone.image is alone.candidates[0]
    refined = draw(
        "a red circle",
        prior,
        f2_vqgan,
        clip_model,
        tokenizer,
        preprocess,
        candidates=2,
        refine_steps=2,
        cutn=4,
        precision="float32",
    )
    assert len(refined.refined.losses) == 2 and refined.image is refined.refined.image
    with pytest.raises(ValueError, match="needs a clip_model"):
        draw("a red circle", prior, f2_vqgan, refine_steps=3)
    with pytest.raises(ValueError, match="candidates"):
        draw("a red circle", prior, f2_vqgan, candidates=0)
    with pytest.raises(TypeError, match=r"unknown draw setting\(s\) \['candidate'\]"):
        draw("a red circle", prior, f2_vqgan, candidate=2)
    with pytest.raises(ValueError, match="refine_steps=0"):
        draw("a red circle", prior, f2_vqgan, lr=0.05)
    with pytest.raises(ValueError, match="grids of"):
        draw("a red circle", small_prior(), f2_vqgan)


def test_trainer_writes_weights_command_and_measurements(
    tmp_path, f2_vqgan, one_torch_thread, capsys
):
    from lessonlib import train_tiny_prior as T

    vq = save_vqgan(f2_vqgan, tmp_path / "vq.safetensors")
    out = tmp_path / "prior.safetensors"
    T.main(
        [
            "--vqgan",
            str(vq),
            "--steps",
            "3",
            "--n-train",
            "40",
            "--d-model",
            "16",
            "--layers",
            "1",
            "--heads",
            "2",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["command"].startswith("python -m lessonlib.train_tiny_prior --vqgan vq.safetensors")
    assert set(info["quality"]["judge_48_prompts"]) == {"colour", "shape", "size", "all"}
    prior, vqgan = load_prior(out)
    assert prior.config.grid == (8, 8) and prior.config.n_codes == 32
    for argv, match in [
        (["--steps", "0"], "--steps must be"),
        (["--p-uncond", "1.5"], "p-uncond"),
        (["--vqgan", str(tmp_path / "nope.safetensors")], "no such file"),
        (["--vqgan", str(vq), "--d-model", "30", "--heads", "4"], "multiple of n_head"),
    ]:
        with pytest.raises(SystemExit):
            T.main(argv + ["--out", str(tmp_path / "x.safetensors")])
        assert match in capsys.readouterr().err


def test_code_data_pairs_captions_with_their_scenes(f2_vqgan):
    from lessonlib.tokenizer import WordTokenizer
    from lessonlib.train_tiny_prior import make_code_data

    tok = WordTokenizer(context_length=24)
    texts, codes = make_code_data(f2_vqgan, tok, 10, seed=0, two_objects=0.3)
    assert texts.shape == (10, 24) and codes.shape == (10, 64)
    assert sum("and" in tok.decode(t) for t in texts) <= 3
    with pytest.raises(ValueError, match="two_objects"):
        make_code_data(f2_vqgan, tok, 10, seed=0, two_objects=1.5)


def test_shipped_prior_with_the_rerankers_draws_the_prompts(one_torch_thread):
    """The shipped pair: the prior writes 16x16 grids for the f2 VQGAN, and with the rerankers most
    pictures are judged right (BENCHMARKS.md: 46/48; here 6 prompts, so a loose bound)."""
    from lessonlib.critics import load_tiny_rerankers
    from lessonlib.judge import judge, object_prompts
    from lessonlib.prior import TINY_PRIOR_WEIGHTS

    prior, vqgan = load_prior()
    assert prior.config.grid == (16, 16) and vqgan.factor == 2
    info = weights_info(TINY_PRIOR_WEIGHTS)  # the .json beside the shipped prior, as shipped
    assert info["command"].startswith("python -m lessonlib.train_tiny_prior")
    assert info["vqgan"] == "tiny_vqgan_f2.safetensors"
    reranker, preprocess, tokenizer = load_tiny_rerankers()
    assert len(reranker.members) == 3
    prompts = object_prompts(6, seed=5)
    right = 0
    for i, prompt in enumerate(prompts):
        d = draw(prompt, prior, vqgan, reranker, tokenizer, preprocess, seed=i)
        assert len(d.candidates) == 16 and d.image.size == (32, 32)
        right += judge(d.image, prompt).ok
    assert right >= 4, f"only {right}/6 judged right"
