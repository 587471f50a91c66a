"""lessonlib.tokenizer: unknown words are never silent.

The tiny CLIP reads every word outside its vocabulary as ``<unk>``, so "a crimson circle" would quietly
mean "a <unk> circle". The tokenizer says so with one ``UnknownWordWarning`` per call, naming the words;
zero-shot classification and image search pass that warning on once (not once per template or batch),
pointing at the caller's line rather than at lessonlib's insides.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from PIL import Image

from lessonlib import embed
from lessonlib import zeroshot as zs
from lessonlib.tokenizer import UNK_ID, UnknownWordWarning, WordTokenizer


@pytest.fixture(scope="module")
def tiny():
    from lessonlib.models import load_tiny_clip

    return load_tiny_clip()


def _unknown_warnings(record):
    return [w for w in record if issubclass(w.category, UnknownWordWarning)]


def test_unknown_word_warns_once_naming_the_word_and_the_vocabulary():
    tok = WordTokenizer()
    with pytest.warns(UnknownWordWarning) as record:
        ids = tok("a crimson circle")
    assert ids[0, 2] == UNK_ID
    [w] = _unknown_warnings(record)
    message = str(w.message)
    assert "unknown word 'crimson' in 'a crimson circle'" in message
    assert "<unk>" in message and "red, green" in message and ".words" in message
    assert issubclass(UnknownWordWarning, UserWarning)


def test_many_texts_give_one_warning_that_counts_them():
    tok = WordTokenizer()
    texts = ["itap of a red circle", "a bad photo of the blue square", "a red circle"] * 10
    with pytest.warns(UnknownWordWarning) as record:
        tok(texts)
    [w] = _unknown_warnings(record)
    assert "'itap', 'bad'" in str(w.message) and "in 20 of 30 texts" in str(w.message)
    many = [f"a {chr(97 + i)}{chr(97 + i)}x circle" for i in range(12)]  # aax, bbx, ... unknown
    with pytest.warns(UnknownWordWarning, match="and 4 more"):
        tok(many)


def test_known_words_give_no_warning():
    tok = WordTokenizer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok(["a small red circle at the top", "An orange cross."])
        tok("<unk> circle")  # the token written out on purpose is not an unknown word
    assert tok.unknown_words("a red circle") == []


def test_urdu_words_are_unknown_words_not_nothing():
    tok = WordTokenizer()
    prompt = "لال دائرہ کی تصویر"  # "a picture of a red circle"
    assert tok.split(prompt) == ["لال", "دائرہ", "کی", "تصویر"]
    assert tok.split("a ‘red’ circle، café۔") == ["a", "red", "circle", "café"]
    with pytest.warns(UnknownWordWarning, match="reads English only") as record:
        ids = tok(prompt)
    assert ids[0, 1:5].tolist() == [UNK_ID] * 4
    assert "'لال'" in str(_unknown_warnings(record)[0].message)


def test_zero_shot_passes_the_warning_on_once_pointing_at_the_caller(tiny):
    model, _, tok = tiny
    with pytest.warns(UnknownWordWarning) as record:
        zs.ZeroShotClassifier(model, tok, ["crimson circle", "blue square"], templates="shapes")
    [w] = _unknown_warnings(record)  # 14 prompts, one warning
    assert "'crimson'" in str(w.message) and "in 7 of 14 texts" in str(w.message)
    assert w.filename == __file__  # the line that built the classifier, not lessonlib's insides


def test_batches_do_not_repeat_the_warning(tiny):
    model, _, tok = tiny
    with pytest.warns(UnknownWordWarning) as record:
        embed.embed_texts(model, tok, ["a crimson circle"] * 10, batch_size=3)
    [w] = _unknown_warnings(record)
    assert w.filename == __file__


def test_search_passes_the_warning_on(tiny):
    from lessonlib.search import ImageIndex

    model, preprocess, tok = tiny
    index = ImageIndex(model, preprocess, tok, cache=None)
    index.add([Image.new("RGB", (32, 32), c) for c in ("red", "blue")], progress=False)
    with pytest.warns(UnknownWordWarning, match="'crimson'") as record:
        hits = index.search("a crimson circle", k=2)
    assert len(hits) == 2 and len(_unknown_warnings(record)) == 1
    assert _unknown_warnings(record)[0].filename == __file__


def test_unknown_words_change_the_embedding_silently_no_more(tiny):
    """Why the warning matters: an unknown word is the same <unk> as any other unknown word."""
    model, _, tok = tiny
    with pytest.warns(UnknownWordWarning):
        a, b = embed.embed_texts(model, tok, ["a crimson circle", "a scarlet circle"])
    assert torch.allclose(a, b)
