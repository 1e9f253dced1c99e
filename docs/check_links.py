"""Check every internal link of the built HTML site: ``python docs/check_links.py build/docs/html``.

Sphinx's nitpicky build (``-n -W``) already refuses a cross-reference (``:doc:``, ``:ref:``,
``:py:class:``, a Markdown link to another page) that does not resolve. This checks the result
once more, offline: every ``href`` and ``src`` that is not an external URL must name a file of
the site, and its ``#anchor``, if any, an ``id`` in that file. External links (``http(s)://``,
``mailto:``) are not fetched: the build must work without a network.
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name"):
                self.ids.add(value)
            elif name in ("href", "src") and not (tag == "link" and name == "href" and value.startswith("_static")):
                self.links.append(value)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def broken_links(site: Path) -> list[str]:
    """Every internal link of the site at ``site`` that points at nothing, as ``page: link``."""
    pages = {path: _parse(path) for path in sorted(site.rglob("*.html"))}
    broken = []
    for path, page in pages.items():
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith("javascript:"):
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{path.relative_to(site)}: {link} (no such file)")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{path.relative_to(site)}: {link} (no such anchor)")
    return broken


def main(argv: list[str]) -> int:
    site = Path(argv[1] if len(argv) > 1 else "build/docs/html").resolve()
    if not (site / "index.html").is_file():
        print(f"No built site at {site}: run ./dev docs first.", file=sys.stderr)
        return 2
    broken = broken_links(site)
    for line in broken:
        print(f"Broken internal link in {line}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
