"""Shapes World in Urdu: the words, their grammar, and the normalisation of Urdu text.

Introduced in lesson 02_zero_shot_classification (Urdu prompts for the bilingual tiny CLIP).

Urdu puts the adjectives before the noun, as English does ("ایک چھوٹا نیلا دائرہ", a small blue
circle), but an adjective ending in -ا takes the noun's gender: دائرہ (circle) and مربع (square) are
masculine, تکون (triangle), صلیب (cross) and شکل (shape) are feminine, so "a small blue triangle" is
"ایک چھوٹی نیلی تکون". Colours such as لال (red), جامنی (purple) and نارنجی (orange) never change. A
place comes first: "اوپر بائیں طرف ایک لال دائرہ" (at the top left, a red circle).

``normalise(text)`` makes the many ways of typing the same Urdu word one: Unicode NFKC (Arabic
presentation forms from PDFs become letters), Arabic letters that Urdu keyboards do not use mapped to
the Urdu ones (ي -> ی, ك -> ک, ه -> ہ), short-vowel marks (zer, zabar, pesh ...) and the kashida
stretch removed, and the zero-width non-joiner (ZWNJ) read as a space: Urdu writers put it between two
words where the last letter of one would otherwise join the next, instead of a space that looks too
wide, so it marks a word boundary. Urdu punctuation (۔ ، ؟ ؛) separates words like English punctuation.

Example:
    >>> caption_ur(ShapeObject("triangle", "blue", "small", "at the top"), "size")
    'ایک چھوٹی نیلی تکون'
    >>> normalise("ايك") == "ایک"   # typed with Arabic yeh and kaf
    True
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import numpy as np

from lessonlib.data import (
    COLOURS,
    DETAILS,
    SHAPES,
    ShapeObject,
    _check_detail_weights,
    check_colour,
    check_shape,
)

# Gender of each noun: "m" masculine, "f" feminine.
SHAPES_UR: dict[str, tuple[str, str]] = {
    "circle": ("دائرہ", "m"),
    "square": ("مربع", "m"),
    "triangle": ("تکون", "f"),
    "cross": ("صلیب", "f"),
}
SHAPE_WORD_UR = ("شکل", "f")  # "shape", for captions that name only the colour
# Masculine and feminine forms; an adjective that does not change has the same word twice.
COLOURS_UR: dict[str, tuple[str, str]] = {
    "red": ("لال", "لال"),
    "green": ("ہرا", "ہری"),
    "blue": ("نیلا", "نیلی"),
    "yellow": ("پیلا", "پیلی"),
    "purple": ("جامنی", "جامنی"),
    "orange": ("نارنجی", "نارنجی"),
}
SIZES_UR: dict[str, tuple[str, str]] = {"small": ("چھوٹا", "چھوٹی"), "large": ("بڑا", "بڑی")}
POSITIONS_UR: dict[str, str] = {
    "at the top left": "اوپر بائیں طرف",
    "at the top": "اوپر",
    "at the top right": "اوپر دائیں طرف",
    "on the left": "بائیں طرف",
    "in the middle": "درمیان میں",
    "on the right": "دائیں طرف",
    "at the bottom left": "نیچے بائیں طرف",
    "at the bottom": "نیچے",
    "at the bottom right": "نیچے دائیں طرف",
}
ONE, AND = "ایک", "اور"
# The Urdu prompt templates of lesson 02 ("a picture of {}", "a drawing of {}", "{} in the picture").
TEMPLATES_UR: tuple[str, ...] = ("{} کی تصویر", "{} کا خاکہ", "تصویر میں {}")
SIMPLE_TEMPLATE_UR = "{colour} {shape}"  # the adjectives agree with the shape: see class_name_ur


def _words() -> tuple[str, ...]:
    found: list[str] = []
    texts = [ONE, AND, SHAPE_WORD_UR[0], *TEMPLATES_UR, *POSITIONS_UR.values()]
    texts += [w for w, _ in SHAPES_UR.values()]
    texts += [w for pair in (*COLOURS_UR.values(), *SIZES_UR.values()) for w in pair]
    for text in texts:
        for word in text.replace("{}", " ").split():
            if word not in found:
                found.append(word)
    return tuple(found)


# Every Urdu word the captions and templates use (the bilingual tokenizer adds them to its vocabulary).
WORDS_UR: tuple[str, ...] = _words()

_ARABIC_TO_URDU = str.maketrans({"ي": "ی", "ى": "ی", "ك": "ک", "ه": "ہ", "ۀ": "ۂ"})
_DROP = {"\u200d", "\u0640"}  # zero-width joiner, kashida (tatweel)


def normalise(text: str) -> str:
    """One spelling for every way of typing an Urdu word (see the module docstring); ASCII text is
    returned unchanged.

    Example:
        >>> normalise("نیلا\u200cدائرہ") == "نیلا دائرہ"   # a ZWNJ between two words
        True
    """
    if not isinstance(text, str):
        raise TypeError(f"texts must be strings, got {type(text).__name__}: {text!r}")
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKC", text).translate(_ARABIC_TO_URDU)
    text = text.replace("\u06cc\u0654", "\u0626").replace("\u200c", " ")  # ئ typed as two; ZWNJ
    return "".join(c for c in text if c not in _DROP and not _is_vowel_mark(c))


def _is_vowel_mark(c: str) -> bool:
    """Short-vowel and Quranic marks (zer, zabar, pesh, shadda ...), not the hamza that spells a word."""
    return unicodedata.category(c) == "Mn" and "\u0610" <= c <= "\u06ed" and c not in "\u0654\u0655"


def _agree(adjective: tuple[str, str], gender: str) -> str:
    return adjective[0] if gender == "m" else adjective[1]


def phrase_ur(obj: ShapeObject, detail: str) -> str:
    """One object in Urdu at the given detail (``data.DETAILS`` except "random")."""
    noun, gender = SHAPES_UR[check_shape(obj.shape)]
    colour = COLOURS_UR[check_colour(obj.colour)]
    if detail == "shape":
        return f"{ONE} {noun}"
    if detail == "colour":
        return f"{ONE} {_agree(colour, SHAPE_WORD_UR[1])} {SHAPE_WORD_UR[0]}"
    simple = f"{_agree(colour, gender)} {noun}"
    if detail == "simple":
        return f"{ONE} {simple}"
    size = f"{_agree(SIZES_UR[obj.size], gender)} {simple}"
    if detail == "size":
        return f"{ONE} {size}"
    if detail == "position":
        return f"{POSITIONS_UR[obj.position]} {ONE} {simple}"
    if detail == "full":
        return f"{POSITIONS_UR[obj.position]} {ONE} {size}"
    raise ValueError(f"unknown detail {detail!r}: choose one of {', '.join(DETAILS)}")


def caption_ur(objects: ShapeObject | Sequence[ShapeObject], detail: str = "simple") -> str:
    """The Urdu caption of a scene; several objects are joined with اور (and).

    Example:
        >>> caption_ur([ShapeObject("circle", "red", "large", "in the middle")], "full")
        'درمیان میں ایک بڑا لال دائرہ'
    """
    if isinstance(objects, ShapeObject):
        objects = [objects]
    if not objects:
        raise ValueError("objects is empty: give at least one ShapeObject to describe")
    return f" {AND} ".join(phrase_ur(obj, detail) for obj in objects)


def class_name_ur(colour: str, shape: str, size: str | None = None) -> str:
    """ "blue", "triangle" -> "نیلی تکون" (the colour, and size if given, agree with the shape)."""
    noun, gender = SHAPES_UR[check_shape(shape)]
    words = [_agree(COLOURS_UR[check_colour(colour)], gender), noun]
    if size is not None:
        if size not in SIZES_UR:
            raise ValueError(f"unknown size {size!r}: choose one of {', '.join(SIZES_UR)}")
        words.insert(0, _agree(SIZES_UR[size], gender))
    return " ".join(words)


def class_prompts_ur(template: str = "ایک {}") -> list[str]:
    """One Urdu prompt per colour x shape class, in ``data.class_names()``'s order (colour-major).

    Example:
        >>> class_prompts_ur()[:2] == ["ایک لال دائرہ", "ایک لال مربع"]
        True
    """
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(f"template {template!r} must contain one {{}} for the class name")
    return [template.format(class_name_ur(c, s)) for c in COLOURS for s in SHAPES]


# Words that name a colour or a shape in an Urdu caption (the caption-aware augmentations read them).
COLOUR_WORDS_UR: frozenset[str] = frozenset(w for pair in COLOURS_UR.values() for w in pair)
SHAPE_WORDS_UR: frozenset[str] = frozenset(w for w, _ in SHAPES_UR.values())


class Bilingual:
    """Training data in two languages: a share of the captions of ``world`` told in Urdu instead.

    ``world`` is a Shapes World data set (anything with ``world[i] -> (image, caption)`` and
    ``world.objects(i)``); caption ``i`` is Urdu with probability ``share``, drawn from ``seed`` and
    ``i`` (so the same item always reads the same), at a detail drawn from ``weights`` (default
    ``data.RANDOM_DETAIL_WEIGHTS``), and the picture is unchanged.

    Example:
        >>> from lessonlib.data import ShapesWorld
        >>> both = Bilingual(ShapesWorld(100, seed=1), share=0.5)
        >>> sum(not both[i][1].isascii() for i in range(100)) > 25
        True
    """

    def __init__(self, world, share: float = 0.5, seed: int = 0, weights=None) -> None:
        if not (isinstance(share, (int, float)) and 0 <= share <= 1):
            raise ValueError(f"share {share!r}: give the fraction of Urdu captions, from 0 to 1")
        if not callable(getattr(world, "objects", None)):
            raise TypeError(
                f"{type(world).__name__} has no .objects(i): give a Shapes World data set"
            )
        self.world, self.share, self.seed = world, float(share), seed
        self.weights = _check_detail_weights(weights)

    def __len__(self) -> int:
        return len(self.world)

    def objects(self, i: int):
        return self.world.objects(i)

    def __getitem__(self, i: int):
        image, text = self.world[i]
        rng = np.random.default_rng([self.seed, int(i), 11])
        if rng.random() >= self.share:
            return image, text
        names = list(self.weights)
        p = np.asarray([self.weights[k] for k in names], dtype=np.float64)
        return image, caption_ur(
            self.world.objects(i), names[rng.choice(len(names), p=p / p.sum())]
        )
