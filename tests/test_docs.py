"""The documentation keeps its promises: README.md and every page under docs/ link only to files and
headings that exist, and every ```yaml block in them is a recipe that validates.

The snippet rule (docs/contributing.md): a ```yaml block is read as if it were a file in recipes/, so
`base: mlm.yaml` names the bundled recipe and every key it leaves out takes the schema's default; a
section on its own (`peft: ...`) is therefore a valid recipe too. YAML that is not a recipe goes in a
```text block. No ML library is imported here.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from kerasboost.errors import RecipeError
from kerasboost.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
README_LIMIT = 16384  # bytes: the front page stays short; details belong in docs/

FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\((?P<target><[^>]*>|[^()\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(?P<text>.*?)\s*#*\s*$")


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _blocks_and_prose(page: Path):
    """([(language, first line number, text)] of the fenced blocks, [(line number, line)] outside them)."""
    blocks, prose = [], []
    inside = None
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        if inside is None:
            opened = FENCE.match(line)
            if opened:
                inside = {
                    "fence": opened["fence"],
                    "indent": len(opened["indent"]),
                    "lang": opened["lang"].lower(),
                    "start": number,
                    "lines": [],
                }
            else:
                prose.append((number, line))
            continue
        stripped = line.strip()
        if stripped.startswith(inside["fence"]) and set(stripped) == {inside["fence"][0]}:
            blocks.append((inside["lang"], inside["start"], "\n".join(inside["lines"])))
            inside = None
        else:
            indent = inside["indent"]
            inside["lines"].append(line[indent:] if line[:indent].strip() == "" else line)
    if inside is not None:
        blocks.append(("unclosed", inside["start"], ""))
    return blocks, prose


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts as its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of `page`, duplicates numbered as GitHub does (name, name-1, name-2 ...)."""
    found: dict[str, int] = {}
    result = set()
    for _, line in _blocks_and_prose(page)[1]:
        heading = HEADING.match(line)
        if not heading:
            continue
        base = slug(heading["text"])
        count = found.get(base, 0)
        found[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(page: Path) -> list[str]:
    problems = []
    for number, line in _blocks_and_prose(page)[1]:
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            target = match["target"].strip("<>")
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto: ...
                continue
            path_part, _, anchor = target.partition("#")
            resolved = (page.parent / path_part).resolve() if path_part else page
            where = f"{_name(page)}:{number}: link ({target})"
            if not resolved.exists():
                problems.append(f"{where}: no such file or directory: {path_part}")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                problems.append(
                    f"{where}: {resolved.relative_to(ROOT).as_posix()} has no heading with anchor #{anchor}"
                )
    return problems


def bad_snippets(page: Path, scratch: Path) -> list[str]:
    """Each ```yaml block loaded as a file in (a copy of) recipes/, its lines numbered as in `page`."""
    for recipe in (ROOT / "recipes").glob("*.yaml"):
        shutil.copy(recipe, scratch / recipe.name)
    problems = []
    for language, start, text in _blocks_and_prose(page)[0]:
        where = f"{_name(page)}:{start}"
        if language == "unclosed":
            problems.append(f"{where}: a code fence is never closed")
            continue
        if language not in ("yaml", "yml"):
            continue
        snippet = scratch / f"snippet-{start}.yaml"
        snippet.write_text("\n" * start + text + "\n", encoding="utf-8")  # YAML errors then name the page's lines
        try:
            load_recipe(snippet)
        except RecipeError as err:
            message = str(err).removeprefix(f"{snippet}: ").replace(str(snippet), _name(page))
            problems.append(f"{where}: ```yaml block is not a valid recipe: {message}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_relative_links_resolve(page):
    problems = broken_links(page)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_yaml_snippets_are_valid_recipes(page, tmp_path):
    problems = bad_snippets(page, tmp_path)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_readme_is_a_front_page():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes, over {README_LIMIT}: move details into docs/"


def test_every_docs_page_is_in_the_index():
    index = DOCS / "README.md"
    linked = {
        (index.parent / m["target"].partition("#")[0]).resolve()
        for _, line in _blocks_and_prose(index)[1]
        for m in LINK.finditer(line)
    }
    missing = [_name(page) for page in PAGES[1:] if page != index and page.resolve() not in linked]
    assert not missing, f"docs/README.md does not link to: {', '.join(missing)}"


def test_slug_follows_github():
    assert slug("Scaling out: the `distribution:` section") == "scaling-out-the-distribution-section"
    assert slug("LoRA, rsLoRA and DoRA") == "lora-rslora-and-dora"
    assert slug("Defaults chosen by measurement") == "defaults-chosen-by-measurement"
    assert slug("What 50 % MFU would take") == "what-50--mfu-would-take"
