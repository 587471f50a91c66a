"""Shapes World: determinism, splits, captions, rendering, bad inputs."""

import numpy as np
import pytest
import torch
from PIL import Image

from lessonlib import data
from lessonlib.data import (
    COLOUR_RGB,
    COLOURS,
    HELD_OUT_PAIRS,
    POSITIONS,
    SHAPES,
    SIMPLE_TEMPLATE,
    SIZES,
    ShapeObject,
    ShapesWorld,
    caption,
    check_colour,
    check_shape,
    class_index,
    class_names,
    render,
)


def test_vocabulary_sizes_meet_the_issue():
    assert len(SHAPES) >= 4 and len(COLOURS) >= 6 and SIZES == ("small", "large")
    assert len(POSITIONS) >= 5
    assert set(COLOUR_RGB) == set(COLOURS)
    assert len(class_names()) == len(SHAPES) * len(COLOURS)
    assert class_names(SIMPLE_TEMPLATE)[class_index("blue", "cross")] == "a blue cross"


def test_held_out_pairs_leave_every_colour_and_shape_in_training():
    assert HELD_OUT_PAIRS, "there must be held-out pairs"
    seen = data.seen_pairs()
    assert not set(HELD_OUT_PAIRS) & set(seen)
    assert {c for c, _ in seen} == set(COLOURS)
    assert {s for _, s in seen} == set(SHAPES)
    for colour, shape in HELD_OUT_PAIRS:
        check_colour(colour), check_shape(shape)


@pytest.mark.parametrize("max_objects", [1, 3])
def test_splits_respect_held_out_pairs(max_objects):
    held = set(HELD_OUT_PAIRS)
    train = ShapesWorld(2000, split="train", seed=3, max_objects=max_objects)
    for i in range(len(train)):
        assert not {o.pair for o in train.objects(i)} & held, train.captions[i]
    assert not set(ShapesWorld(500, split="test", seed=3).labels()) & held
    held_ds = ShapesWorld(500, split="held_out", seed=3, max_objects=max_objects)
    assert set(held_ds.labels()) == held  # all of them, and only them, as the main object
    everything = ShapesWorld(2000, split="all", seed=3)
    assert set(everything.labels()) == set(data.all_pairs())


def test_deterministic_from_seed_and_splits_differ():
    a, b = ShapesWorld(50, seed=7, max_objects=2), ShapesWorld(50, seed=7, max_objects=2)
    assert a.captions == b.captions
    assert torch.equal(a[10][0], b[10][0])
    c = ShapesWorld(50, seed=8, max_objects=2)
    assert a.captions != c.captions
    test = ShapesWorld(50, split="test", seed=7)
    train = ShapesWorld(50, split="train", seed=7)
    assert [train.objects(i) for i in range(50)] != [test.objects(i) for i in range(50)]


def test_item_is_chw_float_in_unit_range_and_transform_gets_pil():
    ds = ShapesWorld(4, image_size=40)
    image, text = ds[0]
    assert image.shape == (3, 40, 40) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert text == ds.captions[0] and isinstance(text, str)
    seen = []
    ds2 = ShapesWorld(4, transform=lambda im: seen.append(im) or "ok")
    assert ds2[1] == ("ok", ds2.captions[1])
    assert isinstance(seen[0], Image.Image) and seen[0].mode == "RGB"
    assert ds[-1][1] == ds.captions[3]


def test_dataloader_batches():
    loader = torch.utils.data.DataLoader(ShapesWorld(10), batch_size=4)
    images, captions = next(iter(loader))
    assert images.shape == (4, 3, 32, 32) and len(captions) == 4


def test_render_draws_the_right_colour_in_the_right_place():
    obj = ShapeObject("square", "blue", "large", "at the top left")
    pixels = np.asarray(render([obj], image_size=48))
    assert pixels.shape == (48, 48, 3)
    top_left = pixels[:16, :16].reshape(-1, 3)
    covered = top_left[top_left.sum(1) > 0]
    assert len(covered) > 20
    assert np.abs(covered.mean(0) - np.array(COLOUR_RGB["blue"])).max() < 40
    assert pixels[16:, 16:].max() == 0  # the rest stays background


def test_shapes_render_differently():
    masks = {s: np.asarray(render([ShapeObject(s, "red")], image_size=64))[..., 0] for s in SHAPES}
    for i, s in enumerate(SHAPES):
        for t in SHAPES[i + 1 :]:
            assert np.abs(masks[s].astype(int) - masks[t].astype(int)).sum() > 255 * 20, (s, t)
    small = np.asarray(render([ShapeObject("circle", "red", "small")], 64))[..., 0]
    assert (small > 128).sum() < (masks["circle"] > 128).sum() / 2


def test_draw_as_unnamed_shapes_keeps_place_and_colour():
    obj = ShapeObject("circle", "green", "large", "on the right")
    normal = np.asarray(render([obj], 48))
    for other in data.UNNAMED_SHAPES:
        assert other not in SHAPES
        drawn = data.render_array([obj], 48, draw_as=[other])
        assert (drawn > 0).any() and not np.array_equal(drawn, normal)
        assert drawn[:, :16].max() == 0  # still on the right
    with pytest.raises(ValueError, match="give one shape per object"):
        data.render_array([obj], 48, draw_as=["blob"])


def test_captions_of_each_detail():
    obj = ShapeObject("circle", "red", "small", "at the top")
    assert caption([obj], "shape") == "a circle"
    assert caption([obj], "colour") == "a red shape"
    assert caption([obj], "simple") == "a red circle"
    assert caption([obj], "size") == "a small red circle"
    assert caption([obj], "full") == "a small red circle at the top"
    two = [obj, ShapeObject("cross", "orange", "large", "on the right")]
    assert caption(two, "simple") == "a red circle and an orange cross"
    forms = {caption([obj], "random", rng=np.random.default_rng(i)) for i in range(50)}
    assert len(forms) >= 5  # random detail really varies


def test_multiple_objects_take_distinct_positions():
    ds = ShapesWorld(300, max_objects=4, seed=1)
    counts = [len(ds.objects(i)) for i in range(len(ds))]
    assert min(counts) == 1 and max(counts) == 4
    for i in range(len(ds)):
        positions = [o.position for o in ds.objects(i)]
        assert len(set(positions)) == len(positions)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown colour 'purpel': choose one of red, green"):
        check_colour("purpel")
    with pytest.raises(ValueError, match=r"unknown shape 'hexagon': choose one of circle, square"):
        check_shape("hexagon")
    with pytest.raises(ValueError, match="unknown colour 'pink'"):
        ShapeObject("circle", "pink")
    with pytest.raises(ValueError, match="unknown position 'upstairs'"):
        ShapeObject("circle", "red", position="upstairs")
    with pytest.raises(ValueError, match="unknown size 'huge': choose one of small, large"):
        ShapeObject("circle", "red", size="huge")
    assert check_colour(" Red ") == "red"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0}, "n must be a positive integer"),
        ({"n": 5, "split": "validation"}, "unknown split 'validation': choose one of train, test"),
        ({"n": 5, "max_objects": 10}, "max_objects must be an integer from 1 to 9"),
        ({"n": 5, "image_size": 8}, "image_size must be an integer >= 16"),
        ({"n": 5, "detail": "verbose"}, "unknown detail 'verbose'"),
        ({"n": 5, "seed": -1}, "seed must be a non-negative integer"),
    ],
)
def test_bad_dataset_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ShapesWorld(**kwargs)


def test_bad_indices_and_objects():
    ds = ShapesWorld(3)
    with pytest.raises(IndexError, match="index 3 is out of range"):
        ds[3]
    with pytest.raises(TypeError, match="index must be an integer"):
        ds["0"]
    with pytest.raises(TypeError, match="expected ShapeObject"):
        render(["a red circle"])
    with pytest.raises(ValueError, match="objects is empty"):
        caption([])
    with pytest.raises(TypeError, match="transform must be callable"):
        ShapesWorld(3, transform="resize")
