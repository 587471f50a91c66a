"""The one safe image loader every lesson uses.

Introduced in lesson 00_welcome.

``load_image`` turns a path, a PIL image or an array into an RGB PIL image. Photos come in many shapes:
rotated by their EXIF tag, grayscale, palette, with an alpha channel, CMYK from a print workflow, 16-bit
from a scientific camera. Each is converted the way a person would expect (alpha is composited on white,
16-bit is scaled, not clipped), and each failure says which file and what would work.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# File endings that folder scans treat as images (anything else in a folder is skipped, with a warning).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# A photo larger than this many pixels is refused as a possible decompression bomb (PIL's own default).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class ImageLoadError(ValueError):
    """An image could not be turned into an RGB picture; the message names the file and the reason."""


class ImageNotFoundError(ImageLoadError, FileNotFoundError):
    """The path does not exist (also a FileNotFoundError, so ``except FileNotFoundError`` works too)."""


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_bit_depth_to_rgb(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer or float images: scale the full range to 0..255 instead of clipping."""
    array = np.asarray(img)
    return Image.fromarray(_array_to_uint8(array, name="image")).convert("RGB")


def _array_to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageLoadError(f"{name} holds NaN or infinite values: give finite pixel values")
        lo, hi = float(array.min()), float(array.max())
        if lo >= 0.0 and hi <= 1.0:  # the usual float convention
            return np.round(array * 255).astype(np.uint8)
        if lo >= 0.0 and hi <= 255.0:
            return np.round(array).astype(np.uint8)
        raise ImageLoadError(
            f"{name} is float with values in [{lo:.3g}, {hi:.3g}]: give values in [0, 1] or [0, 255]"
        )
    if np.issubdtype(array.dtype, np.integer):
        if array.min() < 0:
            raise ImageLoadError(f"{name} has negative pixel values: give unsigned pixel values")
        hi = int(array.max())
        if hi <= 255:
            return array.astype(np.uint8)
        # 16-bit data (uint16, or PIL's 'I' mode holding 16-bit values): scale by the bit depth.
        depth = 65535 if hi <= 65535 else int(np.iinfo(array.dtype).max)
        return np.round(array.astype(np.float64) * (255.0 / depth)).astype(np.uint8)
    raise ImageLoadError(
        f"{name} has dtype {array.dtype}: give uint8, uint16 or float pixel values"
    )


def to_rgb(img: Image.Image, name: str = "image") -> Image.Image:
    """Convert any PIL image mode to RGB the way a person expects (alpha on white, 16-bit scaled)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        return _composite_on_white(img)
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _high_bit_depth_to_rgb(img)
    try:
        return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    except (ValueError, OSError) as err:
        raise ImageLoadError(f"{name}: cannot convert PIL mode {mode!r} to RGB ({err})") from err


def _from_array(array: np.ndarray) -> Image.Image:
    name = f"array of shape {tuple(array.shape)}"
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CHW (torch layout) -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageLoadError(
            f"{name} is not an image: give HxW (gray), HxWx3 (RGB) or HxWx4 (RGBA), or CxHxW"
        )
    if array.size == 0:
        raise ImageLoadError(f"{name} is empty: give an array with at least one pixel")
    img = Image.fromarray(np.ascontiguousarray(_array_to_uint8(array, name)))
    return to_rgb(img, name)


def load_image(source, max_pixels: int | None = MAX_PIXELS) -> Image.Image:
    """Return ``source`` as an RGB PIL image.

    Introduced in lesson 00_welcome.

    ``source`` may be a file path (str or Path), a PIL image, a NumPy array (HxW, HxWx3, HxWx4 or CxHxW;
    uint8, uint16 or float) or a torch tensor. EXIF orientation is applied; grayscale, palette, CMYK and
    16-bit images become RGB; transparent pixels are composited on white. Files with more than
    ``max_pixels`` pixels are refused (decompression bombs); pass ``max_pixels=None`` to lift the limit
    for a file you trust.

    Raises ``ImageNotFoundError`` (a FileNotFoundError) for a missing path and ``ImageLoadError`` for a
    file that is not an image, a truncated file or a too-large one; the message names the file.

    Example:
        >>> import numpy as np
        >>> load_image(np.zeros((4, 6), dtype=np.uint8)).size
        (6, 4)
    """
    if isinstance(source, Image.Image):
        return to_rgb(ImageOps.exif_transpose(source) or source, name="PIL image")
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if type(source).__module__.startswith("torch"):
        return _from_array(source.detach().cpu().numpy())
    if isinstance(source, bytes):
        raise TypeError("got raw bytes: wrap them as io.BytesIO(data) or save them to a file first")
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"cannot load an image from {type(source).__name__}: give a file path, a PIL image or an array"
        )
    path = Path(source).expanduser()
    if not path.exists():
        raise ImageNotFoundError(f"image file '{path}' does not exist: check the path")
    if path.is_dir():
        raise ImageLoadError(f"'{path}' is a folder, not an image: give a file inside it")
    return _open_file(path, max_pixels)


def _open_file(path: Path, max_pixels: int | None) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            with Image.open(path) as img:
                if max_pixels is not None and img.width * img.height > max_pixels:
                    raise ImageLoadError(
                        f"image file '{path}' has {img.width}x{img.height} pixels, more than the limit "
                        f"of {max_pixels:,} (a possible decompression bomb): pass max_pixels=None if you "
                        "trust the file"
                    )
                img.load()  # decode now, inside the try, so truncation is reported here
                img = ImageOps.exif_transpose(img) or img
                return to_rgb(img, name=f"image file '{path}'")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageLoadError(
                f"image file '{path}' is too large to open safely ({err}): pass max_pixels=None if you "
                "trust the file"
            ) from err
        except UnidentifiedImageError as err:
            raise ImageLoadError(
                f"'{path}' is not an image PIL can read: give a {', '.join(IMAGE_SUFFIXES)} file"
            ) from err
        except ImageLoadError:
            raise
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageLoadError(
                f"image file '{path}' is damaged or truncated ({err}): re-download or re-save it"
            ) from err
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def list_image_files(folder, recursive: bool = False) -> list[Path]:
    """Sorted image files in ``folder`` (by ending, see ``IMAGE_SUFFIXES``); hidden files are skipped.

    Example:
        >>> list_image_files(".")  # doctest: +SKIP
        [PosixPath('cat.jpg'), PosixPath('dog.png')]
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"folder '{folder}' does not exist: check the path")
    if not folder.is_dir():
        raise NotADirectoryError(
            f"'{folder}' is a file, not a folder: give the folder that holds it"
        )
    pattern = "**/*" if recursive else "*"
    return sorted(
        p
        for p in folder.glob(pattern)
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def load_images(
    sources: Iterable, max_pixels: int | None = MAX_PIXELS, warn: bool = True
) -> tuple[list[Image.Image], list, list[tuple[object, str]]]:
    """Load many images, skipping the ones that fail instead of stopping at the first.

    Returns ``(images, loaded_sources, skipped)`` where ``skipped`` lists ``(source, reason)``; each skip
    is also reported with a warning that names the file.

    Example:
        >>> images, ok, skipped = load_images(["a.jpg", "notes.txt"])  # doctest: +SKIP
    """
    images, loaded, skipped = [], [], []
    for source in sources:
        try:
            images.append(load_image(source, max_pixels=max_pixels))
            loaded.append(source)
        except (ImageLoadError, TypeError) as err:
            skipped.append((source, str(err)))
            if warn:
                warnings.warn(f"skipped {source}: {err}", stacklevel=2)
    return images, loaded, skipped


# The photos OpenAI's "Interacting with CLIP" notebook uses, all shipped with scikit-image, plus the
# portrait of Grace Hopper that matplotlib ships: real pictures that work with no network.
SAMPLE_PHOTOS = {
    "astronaut": "a portrait of an astronaut with the American flag",
    "camera": "a man looking through a camera on a tripod",
    "chelsea": "a facial photo of a tabby cat",
    "coffee": "a cup of coffee on a saucer",
    "horse": "a black-and-white silhouette of a horse",
    "motorcycle_right": "a red motorcycle standing in a garage",
    "page": "a page of text about segmentation",
    "rocket": "a rocket standing on a launchpad",
    "grace_hopper": "a portrait of Grace Hopper in uniform",
}


def sample_photo_paths() -> dict[str, Path]:
    """Paths of the course's offline sample photos, keyed by name (descriptions in ``SAMPLE_PHOTOS``).

    Introduced in lesson 02_zero_shot_classification.

    Example:
        >>> sorted(sample_photo_paths())[:2]
        ['astronaut', 'camera']
    """
    import matplotlib.cbook
    import skimage

    data_dir = Path(skimage.data_dir)
    paths = {}
    for name in SAMPLE_PHOTOS:
        if name == "grace_hopper":
            paths[name] = Path(
                matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
            )
            continue
        matches = sorted(data_dir.glob(f"{name}.*"))
        if not matches:
            raise FileNotFoundError(
                f"scikit-image's sample photo '{name}' is missing from {data_dir}: reinstall scikit-image"
            )
        paths[name] = matches[0]
    return paths
