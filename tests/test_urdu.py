"""Urdu in the course: Shapes World captions with the right gender agreement, one spelling per word
(normalisation), the tokenizer on Urdu text, bilingual training data and Urdu in figures."""

import warnings

import numpy as np
import pytest

from lessonlib import plotting, urdu
from lessonlib.data import COLOURS, SHAPES, ShapeObject, ShapesWorld, class_names
from lessonlib.tokenizer import DEFAULT_WORDS, UNK_ID, UnknownWordWarning, WordTokenizer


def bilingual_tokenizer():
    return WordTokenizer(list(DEFAULT_WORDS) + [w for w in urdu.WORDS_UR if w not in DEFAULT_WORDS])


@pytest.mark.parametrize(
    ("shape", "colour", "size", "expected"),
    [
        ("circle", "blue", "small", "ایک چھوٹا نیلا دائرہ"),  # masculine
        ("square", "yellow", "large", "ایک بڑا پیلا مربع"),
        ("triangle", "blue", "small", "ایک چھوٹی نیلی تکون"),  # feminine
        ("cross", "green", "large", "ایک بڑی ہری صلیب"),
        ("triangle", "red", "large", "ایک بڑی لال تکون"),  # لال never changes
        ("circle", "orange", "small", "ایک چھوٹا نارنجی دائرہ"),
    ],
)
def test_adjectives_agree_with_the_shapes_gender(shape, colour, size, expected):
    assert urdu.caption_ur(ShapeObject(shape, colour, size, "in the middle"), "size") == expected


def test_every_detail_and_place_first_word_order():
    obj = ShapeObject("triangle", "purple", "small", "at the bottom right")
    assert urdu.caption_ur(obj, "shape") == "ایک تکون"
    assert urdu.caption_ur(obj, "colour") == "ایک جامنی شکل"
    assert urdu.caption_ur(ShapeObject("circle", "green", "small", "at the top"), "colour") == (
        "ایک ہری شکل"  # شکل (shape) is feminine whatever the shape is
    )
    assert urdu.caption_ur(obj, "position") == "نیچے دائیں طرف ایک جامنی تکون"
    assert urdu.caption_ur(obj, "full") == "نیچے دائیں طرف ایک چھوٹی جامنی تکون"
    two = [obj, ShapeObject("square", "red", "large", "at the top left")]
    assert urdu.caption_ur(two, "simple") == "ایک جامنی تکون اور ایک لال مربع"
    with pytest.raises(ValueError, match="unknown detail 'huge'"):
        urdu.caption_ur(obj, "huge")
    with pytest.raises(ValueError, match="objects is empty"):
        urdu.caption_ur([])


def test_every_word_is_known_to_the_bilingual_tokenizer_and_classes_line_up():
    tok = bilingual_tokenizer()
    prompts = urdu.class_prompts_ur()
    assert len(prompts) == len(class_names()) == len(COLOURS) * len(SHAPES)
    assert prompts[class_names().index("blue triangle")] == "ایک نیلی تکون"
    for obj_shape in SHAPES:
        for detail in ("full", "colour"):
            text = urdu.caption_ur(ShapeObject(obj_shape, "yellow", "large", "on the left"), detail)
            assert tok.unknown_words(text) == [], text
    assert all(urdu.normalise(w) == w for w in urdu.WORDS_UR)
    with pytest.raises(ValueError, match="one \\{\\}"):
        urdu.class_prompts_ur("کی تصویر")


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("ايك نيلي تكون", "ایک نیلی تکون"),  # Arabic yeh and kaf, as an Arabic keyboard types them
        ("دائره", "دائرہ"),  # Arabic heh
        ("نِیلی", "نیلی"),  # a zer (short-vowel mark)
        ("نیـــلی", "نیلی"),  # kashida stretch
        ("ﻧﯿﻠﯽ", "نیلی"),  # presentation forms, as copied from a PDF
        ("نی\u06cc\u0654", "نیئ"),  # yeh + hamza typed as two characters: one letter ئ
        ("hello", "hello"),
    ],
)
def test_normalise_gives_one_spelling(typed, expected):
    assert urdu.normalise(typed) == expected


def test_tokenizer_reads_urdu_punctuation_zwnj_and_variants():
    tok = bilingual_tokenizer()
    ids = tok.encode("ایک نیلی تکون")
    assert UNK_ID not in ids and len(ids) == 3
    assert tok.encode("ايك نيلي تكون۔") == ids  # Arabic letters, Urdu full stop
    assert tok.encode("ایک نیلی\u200cتکون") == ids  # ZWNJ between two words
    assert tok.split("لال دائرہ، نیلی تکون؟") == ["لال", "دائرہ", "نیلی", "تکون"]
    with pytest.warns(UnknownWordWarning, match="'سبز'"):
        tok(["ایک سبز دائرہ"])  # green in another word: named, not dropped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok(["ایک ہرا دائرہ", "a green circle"])


def test_bilingual_data_tells_a_share_in_urdu_and_keeps_the_pictures():
    world = ShapesWorld(200, seed=3)
    both = urdu.Bilingual(world, share=0.5, seed=1)
    texts = [both[i][1] for i in range(200)]
    share = np.mean([not t.isascii() for t in texts])
    assert 0.38 < share < 0.62
    assert texts == [both[i][1] for i in range(200)]  # the same item always reads the same
    assert all(np.array_equal(both[i][0], world[i][0]) for i in range(5))
    tok = bilingual_tokenizer()
    assert tok.unknown_words([t for t in texts if not t.isascii()]) == []
    assert all(urdu.Bilingual(world, share=0.0)[i][1] == world[i][1] for i in range(20))
    with pytest.raises(ValueError, match="share 1.5"):
        urdu.Bilingual(world, share=1.5)
    with pytest.raises(TypeError, match="objects"):
        urdu.Bilingual([(0, "a")], share=0.5)


def test_caption_aware_augmentation_reads_urdu_colour_words():
    from lessonlib.augment import RecolourWhenColourUnsaid

    aug = RecolourWhenColourUnsaid([(np.zeros((3, 4, 4)), "ایک نیلی تکون")])
    assert "نیلی" in aug.colour_words and "نیلا" in aug.colour_words


def _render(text, prop, path=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(6, 1.2), dpi=100)
    label = fig.text(0.05, 0.3, text, fontproperties=prop)
    fig.canvas.draw()
    width = label.get_window_extent().width
    ink = int((np.asarray(fig.canvas.buffer_rgba())[..., 0] < 128).sum())
    if path:
        fig.savefig(path)
    plt.close(fig)
    return width, ink


def test_the_urdu_font_has_every_letter_the_course_writes():
    from fontTools.ttLib import TTFont

    cmap = TTFont(str(plotting.URDU_FONT)).getBestCmap()
    text = " ".join(urdu.WORDS_UR) + "۔،؟"
    missing = sorted({c for c in text if c != " " and ord(c) not in cmap})
    assert not missing, f"no glyph (a box) for {missing}"


@pytest.mark.skipif(not plotting.complex_text_layout(), reason="this matplotlib has no libraqm")
def test_urdu_title_is_drawn_joined_not_as_separate_letters_or_boxes(tmp_path):
    prop = plotting.urdu_font(28)
    word = "نیلی"
    joined, ink = _render(plotting.urdu_text(word), prop, tmp_path / "title.png")
    isolated = sum(_render(letter, prop)[0] for letter in word)
    assert ink > 200, "nothing was drawn"
    # Joined letters take their initial/medial/final forms and are far narrower than four isolated
    # letters; drawn as boxes (no glyph) they would be four equal boxes side by side.
    assert joined < 0.6 * isolated, (joined, isolated)


def test_without_complex_layout_the_text_is_reshaped_for_display(monkeypatch):
    monkeypatch.setattr(plotting, "complex_text_layout", lambda: False)
    shown = plotting.urdu_text("نیلی تکون")
    assert shown != "نیلی تکون"  # joined presentation forms, in display (left-to-right) order
    assert urdu.normalise(shown[::-1]).replace(" ", "") == "نیلیتکون"
    assert plotting.urdu_text("a red circle") == "a red circle"
    with pytest.raises(TypeError, match="string"):
        plotting.urdu_text(3)


def test_add_words_keeps_what_the_model_knew_and_freeze_keeps_the_image_tower(one_torch_thread):
    import torch

    from lessonlib.models import (
        TinyCLIPConfig,
        add_words,
        build_tiny_clip,
        freeze_image_tower,
        make_tokenizer,
    )

    torch.manual_seed(0)
    cfg = TinyCLIPConfig()
    model = build_tiny_clip(cfg).eval()
    english = make_tokenizer(cfg)(["a red circle", "a blue square"])
    before = model.encode_text(english).detach()
    grown, bigger = add_words(model, cfg, urdu.WORDS_UR)
    assert len(bigger.words) == len(cfg.words) + len(urdu.WORDS_UR)
    assert grown.token_embedding.num_embeddings == 4 + len(bigger.words)
    tok = make_tokenizer(bigger)
    assert torch.equal(tok(["a red circle", "a blue square"]), english)  # old ids unchanged
    assert torch.allclose(grown.encode_text(english), before)
    assert tok.unknown_words("ایک نیلی تکون") == []
    assert add_words(grown, bigger, ["نیلی"])[1] is bigger  # nothing new: unchanged

    frozen = freeze_image_tower(grown)
    bn = next(m for m in frozen.visual.modules() if isinstance(m, torch.nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    frozen.train()
    assert not frozen.visual.training and frozen.transformer.training
    image = torch.rand(4, 3, 32, 32)
    loss = frozen.encode_image(image).sum() + frozen.encode_text(tok(["ایک نیلی تکون"])).sum()
    loss.backward()
    assert torch.equal(bn.running_mean, stats)
    assert all(p.grad is None for p in frozen.visual.parameters())
    assert frozen.token_embedding.weight.grad is not None


def test_training_new_words_only_leaves_english_answers_exactly_as_they_were(one_torch_thread):
    import torch

    from lessonlib.loss import clip_loss
    from lessonlib.models import (
        TinyCLIPConfig,
        add_words,
        build_tiny_clip,
        make_tokenizer,
        train_new_words_only,
    )

    torch.manual_seed(0)
    cfg = TinyCLIPConfig()
    model = build_tiny_clip(cfg)
    known = model.token_embedding.num_embeddings
    model, cfg = add_words(model, cfg, urdu.WORDS_UR)
    tok = make_tokenizer(cfg)
    english = tok(["a red circle", "a green cross"])
    model.eval()
    before_text = model.encode_text(english).detach()
    old_rows = model.token_embedding.weight[:known].detach().clone()
    new_rows = model.token_embedding.weight[known:].detach().clone()
    train_new_words_only(model, known)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable == [model.token_embedding.weight]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.0)
    images = torch.rand(2, 3, 32, 32)
    for _ in range(3):
        model.train()
        texts = tok(["ایک لال دائرہ", "ایک ہری صلیب"])
        loss = clip_loss(
            model.encode_image(images), model.encode_text(texts), model.logit_scale.exp()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert torch.equal(model.token_embedding.weight[:known], old_rows)
    # (equal up to float rounding: frozen weights let torch take its fused attention kernel)
    assert torch.allclose(model.encode_text(english), before_text, atol=1e-5)
    assert not torch.equal(model.token_embedding.weight[known:], new_rows)  # the new words learnt
