"""The safe image loader: every mode a photo comes in, and every way a file can be bad."""

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from lessonlib.images import (
    SAMPLE_PHOTOS,
    ImageLoadError,
    ImageNotFoundError,
    list_image_files,
    load_image,
    load_images,
    sample_photo_paths,
)


def _save(img: Image.Image, path, **kwargs):
    img.save(path, **kwargs)
    return path


def test_rgb_file_roundtrip(tmp_path):
    img = Image.new("RGB", (7, 5), (10, 20, 30))
    out = load_image(_save(img, tmp_path / "a.png"))
    assert out.mode == "RGB" and out.size == (7, 5)
    assert out.getpixel((0, 0)) == (10, 20, 30)


def test_str_path_and_pathlike(tmp_path):
    path = _save(Image.new("RGB", (3, 3)), tmp_path / "a.png")
    assert load_image(str(path)).size == load_image(path).size == (3, 3)


def test_exif_orientation_is_applied(tmp_path):
    # A 4x2 (wide) picture whose EXIF tag says "rotate 90° clockwise" (orientation 6) must come back tall.
    img = Image.new("RGB", (4, 2), (255, 0, 0))
    img.putpixel((0, 0), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes(), quality=100)
    out = load_image(path)
    assert out.size == (2, 4)
    with Image.open(path) as raw:
        assert raw.size == (4, 2)  # the raw file is wide: the loader did the rotation


def test_grayscale_becomes_rgb(tmp_path):
    out = load_image(_save(Image.new("L", (4, 4), 128), tmp_path / "g.png"))
    assert out.mode == "RGB" and out.getpixel((1, 1)) == (128, 128, 128)


def test_one_bit_becomes_rgb(tmp_path):
    out = load_image(_save(Image.new("1", (4, 4), 1), tmp_path / "b.png"))
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_palette_becomes_rgb(tmp_path):
    img = Image.new("RGB", (4, 4), (0, 200, 0)).convert("P", palette=Image.Palette.ADAPTIVE)
    out = load_image(_save(img, tmp_path / "p.png"))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (0, 200, 0)


def test_palette_with_transparency_composited_on_white(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0] * 256)
    img.info["transparency"] = 0
    out = load_image(_save(img, tmp_path / "pt.png", transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_rgba_is_composited_on_white(tmp_path):
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    img.putpixel((0, 0), (255, 0, 0, 255))  # one opaque red pixel
    img.putpixel((1, 0), (0, 0, 0, 128))  # half-transparent black
    out = load_image(_save(img, tmp_path / "rgba.png"))
    assert out.getpixel((2, 2)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == (255, 0, 0)
    assert 120 <= out.getpixel((1, 0))[0] <= 135


def test_gray_alpha_is_composited_on_white(tmp_path):
    out = load_image(_save(Image.new("LA", (2, 2), (0, 0)), tmp_path / "la.png"))
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_becomes_rgb(tmp_path):
    img = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    out = load_image(_save(img, tmp_path / "c.jpg", quality=100))
    r, g, b = out.getpixel((1, 1))
    assert out.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    array = np.full((4, 4), 65535, dtype=np.uint16)
    array[0, 0] = 32768
    img = Image.fromarray(array)
    out = load_image(_save(img, tmp_path / "16.png"))
    assert out.getpixel((1, 1)) == (255, 255, 255)
    assert out.getpixel((0, 0))[0] in (127, 128)  # mid-grey, not clipped to white


def test_pil_image_and_arrays():
    assert load_image(Image.new("L", (3, 2))).mode == "RGB"
    assert load_image(np.zeros((2, 3, 3), dtype=np.uint8)).size == (3, 2)
    assert load_image(np.ones((2, 3), dtype=np.float32)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.zeros((3, 5, 4), dtype=np.uint8)).size == (5, 3)  # HxWx4
    chw = torch.rand(3, 8, 6)
    assert load_image(chw).size == (6, 8)
    assert load_image(np.full((2, 2), 65535, dtype=np.uint16)).getpixel((0, 0)) == (255,) * 3


@pytest.mark.parametrize(
    "array, words",
    [
        (np.zeros((2, 2, 2), dtype=np.uint8), "not an image"),
        (np.zeros((0, 0), dtype=np.uint8), "empty"),
        (np.full((2, 2), np.nan, dtype=np.float32), "NaN"),
        (np.full((2, 2), 300.0), "[0, 1]"),
        (np.full((2, 2), -1, dtype=np.int16), "negative"),
        (np.zeros((2, 2), dtype=np.complex64), "dtype"),
    ],
)
def test_bad_arrays_get_clear_errors(array, words):
    with pytest.raises(ImageLoadError, match=words.replace("[", r"\[").replace("]", r"\]")):
        load_image(array)


def test_missing_file_names_the_file(tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(ImageNotFoundError, match="nope.jpg"):
        load_image(missing)
    with pytest.raises(FileNotFoundError):  # also catchable the standard way
        load_image(missing)


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path)


def test_non_image_file_names_the_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture")
    with pytest.raises(ImageLoadError, match="notes.jpg.*not an image"):
        load_image(path)


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated_file_names_the_file(tmp_path, fmt, suffix):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, fmt)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match=f"cut{suffix}.*(damaged|truncated)"):
        load_image(path)


def test_decompression_bomb_is_refused_with_the_default_limit(tmp_path):
    # 9,500 x 9,500 = 90.25 M pixels, just over PIL's default limit; 1-bit keeps the file tiny.
    path = _save(Image.new("1", (9_500, 9_500)), tmp_path / "bomb.png")
    assert path.stat().st_size < 200_000
    with pytest.raises(ImageLoadError, match="bomb.png.*max_pixels=None"):
        load_image(path)


def test_pixel_limit_is_configurable_and_restored(tmp_path):
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "big.png")
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageLoadError, match="big.png.*max_pixels=None"):
        load_image(path, max_pixels=50 * 50)
    assert Image.MAX_IMAGE_PIXELS == before
    assert load_image(path, max_pixels=None).size == (100, 100)
    assert Image.MAX_IMAGE_PIXELS == before


@pytest.mark.parametrize("bad", [42, None, b"\x89PNG", ["a.png"]])
def test_wrong_types_say_what_works(bad):
    with pytest.raises(TypeError, match="(file path|BytesIO)"):
        load_image(bad)


def test_folder_helpers_skip_and_name_bad_files(tmp_path):
    _save(Image.new("RGB", (2, 2)), tmp_path / "b.png")
    _save(Image.new("RGB", (2, 2)), tmp_path / "a.jpg")
    (tmp_path / "readme.txt").write_text("hello")
    (tmp_path / "fake.png").write_text("not a png")
    files = list_image_files(tmp_path)
    assert [f.name for f in files] == ["a.jpg", "b.png", "fake.png"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, loaded, skipped = load_images(files)
    assert len(images) == 2 and [p.name for p in loaded] == ["a.jpg", "b.png"]
    assert len(skipped) == 1 and "fake.png" in skipped[0][1]
    assert any("fake.png" in str(w.message) for w in caught)


def test_folder_helpers_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        list_image_files(tmp_path / "missing")
    file = _save(Image.new("RGB", (2, 2)), tmp_path / "x.png")
    with pytest.raises(NotADirectoryError, match="x.png"):
        list_image_files(file)


def test_sample_photos_the_course_uses():
    import matplotlib.cbook
    import skimage.data

    hopper = load_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    assert hopper.mode == "RGB" and min(hopper.size) > 100
    photos = sample_photo_paths()
    assert list(photos) == list(SAMPLE_PHOTOS)
    for name, path in photos.items():
        img = load_image(path)
        assert img.mode == "RGB" and min(img.size) >= 100, name
    assert load_image(photos["camera"]).size == load_image(skimage.data.camera()).size
