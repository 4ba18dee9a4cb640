"""Every relative link and image in the committed docs and results points to a file that exists: bench pages
copied from a machine's nvidia-h200.md under a dated name kept linking ./nvidia-h200.png, a plot that is not
committed (two pages did until session 30)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(text: str) -> list[str]:
    targets = (m.group(1) for m in LINK.finditer(text))
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_the_link_pattern():
    text = "![p](./a.png) [t](results/t.md#x) [w](https://x.org) [s](#sec) ![q](b.png)"
    assert relative_links(text) == ["./a.png", "results/t.md", "b.png"]


def test_every_relative_link_resolves():
    pages = [ROOT / "README.md", *ROOT.glob("results/**/*.md"), *ROOT.glob("docs/**/*.md"),
             *ROOT.glob("models/**/*.md")]
    broken = [f"{page.relative_to(ROOT)}: {t}" for page in pages for t in relative_links(page.read_text())
              if not (page.parent / t).exists()]
    assert not broken, broken
