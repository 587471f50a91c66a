"""lessonlib.judge: the pixel-only checker of generated Shapes World images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lessonlib import data
from lessonlib.judge import judge, judge_dataset, object_prompts, parse_object_prompt


def test_judge_reads_real_renders_right():
    """On real Shapes World renders (32 and 64 px) colour, shape and size are all read right."""
    rates = judge_dataset(160, seed=3, image_size=32)
    assert rates["all"] >= 0.97, rates
    assert judge_dataset(60, seed=4, image_size=64)["all"] >= 0.97


@pytest.mark.parametrize(
    "obj, wrong",
    [
        (data.ShapeObject("circle", "red", "large"), "a large red square"),
        (data.ShapeObject("circle", "red", "large"), "a large orange circle"),
        (data.ShapeObject("circle", "red", "large"), "a small red circle"),
        (data.ShapeObject("triangle", "blue", "small"), "a small blue cross"),
        (data.ShapeObject("cross", "green", "large", "at the top left"), "a large yellow cross"),
    ],
)
def test_judge_rejects_wrong_prompts(obj, wrong):
    image = data.render([obj])
    right = f"a {obj.size} {obj.colour} {obj.shape}"
    assert judge(image, right).ok
    assert not judge(image, wrong).ok


def test_judge_accepts_tensors_and_arrays_and_handles_blank_images():
    image = data.render([data.ShapeObject("square", "purple", "large")])
    arr = np.array(image)
    chw = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    assert judge(arr, "a large purple square").ok
    assert judge(chw, "a large purple square").ok
    blank = judge(np.zeros((32, 32, 3), np.uint8), "a large purple square")
    assert not blank.ok and blank.shape is None
    assert "asked for 'large purple square'" in str(blank)


def test_noise_is_not_an_object():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    assert sum(judge(noise, p).ok for p in object_prompts(10)) <= 1


def test_prompt_parsing_and_bad_prompts():
    assert parse_object_prompt("A Large RED circle") == ("large", "red", "circle")
    assert parse_object_prompt("a red circle") == ("large", "red", "circle")
    for bad in ("", "   ", "a circle", "a red blue circle", "a small large red circle"):
        with pytest.raises(ValueError, match="size|empty"):
            parse_object_prompt(bad)
    prompts = object_prompts(10, seed=0)
    assert len(set(prompts)) == 10 and prompts == object_prompts(10, seed=0)
    with pytest.raises(ValueError, match="n=999"):
        object_prompts(999)


def test_verdict_says_question_mark_where_the_judge_could_not_tell():
    from lessonlib.judge import Verdict

    v = Verdict("yellow", None, "small", ("small", "yellow", "circle"), 0.1, 0.2)
    assert v.seen == "small yellow ?" and not v.ok
    assert str(v) == "saw 'small yellow ?', asked for 'small yellow circle': wrong"
