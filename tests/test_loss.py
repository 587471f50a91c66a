"""The written-out contrastive loss against open_clip's ClipLoss, plus its behaviour and bad inputs."""

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from lessonlib.loss import clip_loss, diagonal_accuracy, similarity_matrix


def _features(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    return image, text


@pytest.mark.parametrize("n, d, seed", [(2, 4, 0), (8, 16, 1), (64, 32, 2), (257, 64, 3)])
@pytest.mark.parametrize("logit_scale", [0.0, math.log(1 / 0.07), math.log(100.0)])
def test_equals_open_clip_clip_loss(n, d, seed, logit_scale):
    image, text = _features(n, d, seed)
    scale = torch.tensor(logit_scale, dtype=torch.float64)
    ours = clip_loss(image, text, scale)
    # open_clip takes the scale already exponentiated (its training loop passes logit_scale.exp()).
    theirs = ClipLoss()(image, text, scale.exp())
    assert abs(float(ours) - float(theirs)) < 1e-5
    # and in float32, as models train
    ours32 = clip_loss(image.float(), text.float(), scale.float())
    theirs32 = ClipLoss()(image.float(), text.float(), scale.float().exp())
    assert abs(float(ours32) - float(theirs32)) < 1e-5


def test_gradients_equal_open_clip_including_the_temperature():
    image, text = _features(16, 8, 5)
    image.requires_grad_(True)
    scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    clip_loss(image, text, scale).backward()
    ours = image.grad.clone(), scale.grad.clone()
    image.grad, scale.grad = None, None
    ClipLoss()(image, text, scale.exp()).backward()
    assert torch.allclose(ours[0], image.grad, atol=1e-8)
    assert torch.allclose(ours[1], scale.grad, atol=1e-8)
    assert float(ours[1]) != 0.0  # the temperature is learnable: it gets a gradient


def test_matching_pairs_give_low_loss_and_random_ones_about_log_n():
    n = 32
    image, text = _features(n, 64, 9)
    aligned = clip_loss(image, image, torch.tensor(math.log(100.0)))
    assert float(aligned) < 0.01
    at_zero_scale = clip_loss(image, text, torch.tensor(0.0))  # all logits nearly equal
    assert abs(float(at_zero_scale) - math.log(n)) < 0.1
    swapped = clip_loss(image, image.flip(0), torch.tensor(math.log(100.0)))
    assert float(swapped) > math.log(n)


def test_loss_is_symmetric_in_images_and_texts():
    image, text = _features(10, 8, 4)
    scale = torch.tensor(1.5, dtype=torch.float64)
    assert torch.allclose(clip_loss(image, text, scale), clip_loss(text, image, scale))


def test_similarity_matrix_and_diagonal_accuracy():
    image, text = _features(6, 8, 2)
    sim = similarity_matrix(image * 3, text * 2)  # normalises first
    assert torch.allclose(sim, image @ text.T)
    assert diagonal_accuracy(torch.eye(4)) == 1.0
    assert diagonal_accuracy(torch.eye(4).flip(0)) == 0.0
    with pytest.raises(ValueError, match="square similarity matrix"):
        diagonal_accuracy(torch.ones(2, 3))


def test_batch_of_one_is_a_clear_error():
    image, text = _features(1, 8, 0)
    with pytest.raises(
        ValueError, match="needs at least two .image, text. pairs, got a batch of 1"
    ):
        clip_loss(image, text, torch.tensor(1.0))


def test_mismatched_or_flat_features_are_errors():
    image, text = _features(4, 8, 0)
    with pytest.raises(ValueError, match=r"image_features \(4, 8\) and text_features \(3, 8\)"):
        clip_loss(image, text[:3], torch.tensor(1.0))
    with pytest.raises(ValueError, match="image_features must be a 2-D tensor"):
        clip_loss(image[0], text[0], torch.tensor(1.0))
