"""The tiny CLIP's word-level tokenizer, called like an open_clip tokenizer.

Introduced in lesson 01_clip_concepts.

Real CLIP models cut text into ~49,000 byte-pair pieces; the embedding table for that vocabulary alone
would be bigger than the whole tiny model. Shapes World needs a few dozen words, so the tiny CLIP reads
whole words: lower-cased, punctuation dropped, one id per known word, ``<unk>`` for anything else.
Because "a crimson circle" would otherwise quietly read as "a <unk> circle", a call that meets unknown
words says so once, with an ``UnknownWordWarning`` that names them (words of any script count: Urdu
words are unknown words too, not silently dropped).

Like open_clip's tokenizers, ``tokenizer(texts)`` returns a ``LongTensor`` of shape
``(len(texts), context_length)``: ``<sot> word ... <eot> <pad> ...``. The text tower pools the features
at the ``<eot>`` position (open_clip ``pool_type="eos"``, ``eos_id=EOT_ID``).

Example:
    >>> tok = WordTokenizer()
    >>> tok(["a red circle"])[0, :5].tolist() == [SOT_ID, tok.id("a"), tok.id("red"), tok.id("circle"), EOT_ID]
    True
"""

from __future__ import annotations

import os
import re
import sys
import unicodedata
import warnings
from collections.abc import Iterable, Sequence

import torch

PAD, SOT, EOT, UNK = "<pad>", "<sot>", "<eot>", "<unk>"
PAD_ID, SOT_ID, EOT_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_TOKENS = (PAD, SOT, EOT, UNK)

# Every word Shapes World captions use, plus the words of common CLIP prompt templates
# ("a photo of a ...", "a drawing of the ...") so that template experiments do not hit <unk> at once.
DEFAULT_WORDS: tuple[str, ...] = (
    # articles and glue
    "a", "the", "and", "of", "with", "is", "this", "that", "there", "in", "on", "at", "it",
    # Shapes World
    "shape", "object", "circle", "square", "triangle", "cross",
    "red", "green", "blue", "yellow", "purple", "orange",
    "small", "large", "big", "tiny",
    "top", "bottom", "left", "right", "middle", "centre", "center",
    # prompt-template words
    "photo", "picture", "image", "drawing", "painting", "rendering", "sketch", "icon", "cartoon",
    "bright", "dark", "simple", "plain", "black", "background",
)  # fmt: skip
# Words read as another word: "an orange circle" and the template "a orange circle" give the same ids.
DEFAULT_ALIASES: dict[str, str] = {"an": "a"}
DEFAULT_CONTEXT_LENGTH = 32

# A word: ASCII letters and digits (and <> for the special tokens), or letters, marks and digits of any
# other script (so that Urdu words are words, unknown ones, rather than nothing at all).
_WORD = re.compile(r"(?:[a-z0-9<>]|[^\x00-\x7f])+")
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Words the warning shows as examples of what the tiny model knows (those in its vocabulary).
_EXAMPLE_WORDS = ("red", "green", "blue", "circle", "square", "triangle", "small", "large", "top")
_MAX_NAMED = 8  # unknown words named in one warning; more are counted


class UnknownWordWarning(UserWarning):
    """A text holds words the tokenizer does not know; they were read as ``<unk>``.

    Introduced in lesson 02_zero_shot_classification. Silence it on purpose with
    ``warnings.filterwarnings("ignore", category=UnknownWordWarning)``.
    """


# Where Jupyter keeps a cell's code: ipykernel writes /tmp/ipykernel_<pid>/<hash>.py, plain IPython
# names it <ipython-input-N-hash>. Neither means anything to a student, so a warning from a cell says
# "<cell>" (the same rule as lessonlib/search/_warn.py).
_CELL_FILE = re.compile(r"(ipykernel_\d+[/\\]\d+\.py$)|(^<ipython-input-)")


def _warn_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn, pointing at the first caller outside lessonlib (the student's line).

    A student's ``ZeroShotClassifier(model, tokenizer, ["crimson circle"])`` reaches the tokenizer four
    calls deeper; the warning should stand under the student's line, not under lessonlib's.
    """
    frame, level = sys._getframe(1), 2  # the function that warns is stacklevel 2 seen from here
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    if frame is None:
        warnings.warn(message, category, stacklevel=2)
    elif _CELL_FILE.search(frame.f_code.co_filename):
        warnings.warn_explicit(
            message,
            category,
            filename="<cell>",
            lineno=frame.f_lineno,
            module=frame.f_globals.get("__name__", "__main__"),
            registry=frame.f_globals.setdefault("__warningregistry__", {}),
        )
    else:
        warnings.warn(message, category, stacklevel=level)


class WordTokenizer:
    """Word-level tokenizer with open_clip's call signature.

    Introduced in lesson 01_clip_concepts.

    Args:
        words: the vocabulary after the four special tokens (ids start at 4).
        context_length: tokens per text, ``<sot>`` and ``<eot>`` included; longer texts are truncated
            with a warning.
        aliases: words to read as other words (e.g. ``"an" -> "a"``).

    Example:
        >>> tok = WordTokenizer(context_length=8)
        >>> tok("a purpel circle").shape
        torch.Size([1, 8])
    """

    def __init__(
        self,
        words: Sequence[str] = DEFAULT_WORDS,
        context_length: int = DEFAULT_CONTEXT_LENGTH,
        aliases: dict[str, str] | None = None,
    ) -> None:
        if (
            not isinstance(context_length, int)
            or isinstance(context_length, bool)
            or context_length < 3
        ):
            raise ValueError(
                f"context_length must be an integer >= 3 (<sot>, one word, <eot>), got {context_length!r}"
            )
        words = list(words)
        duplicates = sorted({w for w in words if words.count(w) > 1})
        if duplicates:
            raise ValueError(f"vocabulary has duplicate words {duplicates}: give each word once")
        clash = [w for w in words if w in SPECIAL_TOKENS]
        if clash:
            raise ValueError(f"vocabulary words {clash} are special tokens: leave them out")
        self.words = tuple(words)
        self.vocab: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS + self.words)}
        self.aliases = dict(DEFAULT_ALIASES if aliases is None else aliases)
        unknown_targets = sorted({t for t in self.aliases.values() if t not in self.vocab})
        if unknown_targets:
            raise ValueError(f"aliases point at words not in the vocabulary: {unknown_targets}")
        self.context_length = context_length
        self.pad_id, self.sot_id, self.eot_id, self.unk_id = PAD_ID, SOT_ID, EOT_ID, UNK_ID

    @property
    def vocab_size(self) -> int:
        """Number of token ids (special tokens included)."""
        return len(self.vocab)

    def id(self, word: str) -> int:
        """Id of one word (``UNK_ID`` if unknown)."""
        word = self.aliases.get(word, word)
        return self.vocab.get(word, UNK_ID)

    def split(self, text: str) -> list[str]:
        """Lower-case words of ``text``, punctuation dropped."""
        if not isinstance(text, str):
            raise TypeError(f"texts must be strings, got {type(text).__name__}: {text!r}")
        text = text.lower()
        if not text.isascii():  # punctuation and symbols of other scripts (، ۔ ’ …) separate words
            from lessonlib.urdu import normalise  # one spelling per Urdu word (NFKC, letters, ZWNJ)

            text = normalise(text)
            text = "".join(
                c if c.isascii() or unicodedata.category(c)[0] in "LMN" else " " for c in text
            )
        return _WORD.findall(text)

    def encode(self, text: str) -> list[int]:
        """Ids of the words of ``text`` (no special tokens, no truncation)."""
        return [self.id(w) for w in self.split(text)]

    def unknown_words(self, texts: str | Iterable[str]) -> list[str]:
        """Words of ``texts`` that the vocabulary does not know (they become ``<unk>``).

        Example:
            >>> WordTokenizer().unknown_words("a purpel circle")
            ['purpel']
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        out: list[str] = []
        for text in texts:
            for w in self.split(text):
                if self.id(w) == UNK_ID and w not in out:
                    out.append(w)
        return out

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Words of a row of ids, special tokens dropped."""
        inverse = {i: t for t, i in self.vocab.items()}
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return " ".join(
            inverse.get(int(i), UNK) for i in ids if int(i) not in (PAD_ID, SOT_ID, EOT_ID)
        )

    def __call__(
        self, texts: str | Sequence[str], context_length: int | None = None
    ) -> torch.LongTensor:
        """Token ids, shape ``(len(texts), context_length)``, like ``open_clip.tokenize``."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence) or len(texts) == 0:
            raise ValueError(
                f"texts must be a string or a non-empty list of strings, got {texts!r}"
            )
        length = self.context_length if context_length is None else context_length
        if not isinstance(length, int) or length < 3:
            raise ValueError(f"context_length must be an integer >= 3, got {length!r}")
        out = torch.full((len(texts), length), PAD_ID, dtype=torch.long)
        truncated, unknown, texts_with_unknown = [], [], []
        for row, text in enumerate(texts):
            words = self.split(text)
            ids = [SOT_ID, *(self.id(w) for w in words)]
            new = [w for w in words if self.id(w) == UNK_ID and w != UNK]
            if new:
                texts_with_unknown.append(text)
                unknown.extend(w for w in dict.fromkeys(new) if w not in unknown)
            if len(ids) > length - 1:
                truncated.append(text)
                ids = ids[: length - 1]
            ids.append(EOT_ID)
            out[row, : len(ids)] = torch.tensor(ids)
        if unknown:  # once per call, however many texts (a prompt ensemble is one call)
            _warn_caller(
                self._unknown_message(unknown, texts_with_unknown, len(texts)), UnknownWordWarning
            )
        if truncated:
            _warn_caller(
                f"{len(truncated)} text(s) longer than context_length={length} tokens were truncated, "
                f"e.g. {truncated[0]!r}: use shorter prompts"
            )
        return out

    def _unknown_message(self, unknown: list[str], texts: list[str], n_texts: int) -> str:
        named = ", ".join(repr(w) for w in unknown[:_MAX_NAMED])
        if len(unknown) > _MAX_NAMED:
            named += f" and {len(unknown) - _MAX_NAMED} more"
        where = (
            f"in {texts[0]!r}"
            if n_texts == 1
            else f"in {len(texts):,} of {n_texts:,} texts, e.g. {texts[0]!r}"
        )
        examples = [w for w in _EXAMPLE_WORDS if w in self.vocab] or list(self.words[:8])
        bilingual = any(not w.isascii() for w in self.words)
        english = (
            " It reads English only (the words of Shapes World captions)."
            if any(not w.isascii() for w in unknown) and not bilingual
            else ""
        )
        if bilingual:
            examples += [w for w in ("نیلا", "دائرہ", "تکون") if w in self.vocab]
        return (
            f"unknown word{'s' if len(unknown) > 1 else ''} {named} {where}: the tiny model reads "
            f"{'them' if len(unknown) > 1 else 'it'} as <unk>, one token for every word it does not "
            f"know.{english} It knows {len(self.words)} words, e.g. {', '.join(examples)}: "
            "see the tokenizer's .words"
        )

    def config(self) -> dict:
        """JSON-ready settings; ``WordTokenizer(**tok.config())`` rebuilds the same tokenizer."""
        return {
            "words": list(self.words),
            "context_length": self.context_length,
            "aliases": self.aliases,
        }

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size}, context_length={self.context_length})"
