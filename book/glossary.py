"""Write the course glossary (docs/glossary.md, a page of the site) from the Urdu translators' term lists.

    python book/glossary.py

Each Urdu lesson has a `notebooks/ur/terms_NN_topic.tsv`: one line per technical term it uses,
`English<TAB>Urdu<TAB>one-line explanation in Urdu`. The glossary lists every term once (the first
lesson that uses it gives its Urdu term and explanation), sorted by the English term, with the lessons
that use it. Where two lessons chose different Urdu terms, both are shown, so that a later edit can make
them one. `tests/test_urdu_twins.py` checks the glossary is up to date.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UR = ROOT / "notebooks" / "ur"
OUT = ROOT / "docs" / "glossary.md"


def terms() -> dict[str, dict]:
    """English term (lower case) -> {"en", "ur": [..], "explain", "lessons": [..]}."""
    found: dict[str, dict] = {}
    for path in sorted(UR.glob("terms_*.tsv")):
        lesson = path.stem.removeprefix("terms_")[:2]
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 3 or not all(p.strip() for p in parts):
                raise SystemExit(
                    f"{path}:{number}: give English<TAB>Urdu<TAB>explanation: {line!r}"
                )
            en, ur, explain = (p.strip() for p in parts)
            entry = found.setdefault(
                en.lower(), {"en": en, "ur": [], "explain": explain, "lessons": []}
            )
            if ur not in entry["ur"]:
                entry["ur"].append(ur)
            if lesson not in entry["lessons"]:
                entry["lessons"].append(lesson)
    return found


def render() -> str:
    rows = [
        "# Glossary · فرہنگ",
        "",
        "Every technical term the lessons use, in English and in Urdu, with a one-line explanation in",
        "Urdu and the lessons that use it. Made by `python book/glossary.py` from the Urdu lessons' term",
        "lists (`notebooks/ur/terms_*.tsv`); where lessons chose different Urdu words, all are listed.",
        "",
        "| English | اردو | وضاحت (explanation) | lessons |",
        "|---|---|---|---|",
    ]
    for _, entry in sorted(terms().items()):
        cells = [
            entry["en"],
            " / ".join(entry["ur"]),
            entry["explain"],
            ", ".join(entry["lessons"]),
        ]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT} ({len(terms())} terms)")
