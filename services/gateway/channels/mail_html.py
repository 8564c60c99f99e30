"""Mail HTML → readable text: paragraphs and line breaks kept, links as "text (url)", quoted blocks
as "> " lines so that the one quote stripper (shared.text) treats them like plain-text quotes.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any


class _HtmlText(HTMLParser):
    """Readable text from mail HTML: paragraphs and line breaks kept, links as "text (url)", quoted
    blocks as "> " lines (so the quote stripper treats them like plain-text quotes), no tags."""

    PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "pre", "hr",
                           "blockquote", "dl", "address", "figure"})
    LINE = frozenset({"div", "section", "article", "header", "footer", "tr", "li", "dt", "dd", "center",
                      "form", "main", "nav", "aside", "caption", "tbody", "thead", "tfoot"})
    SKIP = frozenset({"script", "style", "head", "title", "template", "noscript", "object", "svg"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.skip = 0
        self.pre = 0
        self.quote = 0
        self.lists: list[list[Any]] = []  # [kind, counter] per open ul/ol
        self.link: tuple[str, list[str]] | None = None
        # Whether the current line has text and ends in a space, kept as we go: joining the line on
        # every chunk would be quadratic on HTML with thousands of inline tags in one block.
        self.has_text = False
        self.trailing_space = False

    def _add(self, chunk: str) -> None:
        if chunk:
            self.current.append(chunk)
            self.has_text = self.has_text or bool(chunk.strip())
            self.trailing_space = chunk[-1].isspace()

    # lines ------------------------------------------------------------------------------------------
    def _end_line(self) -> None:
        line = "".join(self.current).rstrip()
        self.current = []
        self.has_text = self.trailing_space = False
        if line:
            self.lines.append("> " * self.quote + line)

    def _break(self) -> None:  # <br>: an empty line is a real blank line
        line = "".join(self.current).rstrip()
        self.current = []
        self.has_text = self.trailing_space = False
        self.lines.append("> " * self.quote + line if line else "")

    def _paragraph(self) -> None:
        self._end_line()
        if self.lines and self.lines[-1] != "":
            self.lines.append("")

    # parser callbacks ---------------------------------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skip += 1
            return
        if tag == "body":
            self.skip = 0  # mail HTML often never closes <head>; the body starts here all the same
        if tag == "br":
            self._break()
        elif tag in self.PARAGRAPH:
            self._paragraph()
        elif tag in self.LINE:
            self._end_line()
        if tag == "blockquote":
            self.quote += 1
        elif tag == "pre":
            self.pre += 1
        elif tag in ("ul", "ol"):
            self.lists.append([tag, 0])
        elif tag == "li":
            if self.lists and self.lists[-1][0] == "ol":
                self.lists[-1][1] += 1
                self._add(f"{self.lists[-1][1]}. ")
            else:
                self._add("- ")
        elif tag in ("td", "th") and self.has_text:
            self._add(" ")
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            self.link = (href.strip(), [])

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
            return
        if tag == "a" and self.link is not None:
            href, words = self.link
            self.link = None
            label = " ".join("".join(words).split())
            target = href[7:] if href.lower().startswith("mailto:") else href
            if href.lower().startswith(("http://", "https://", "mailto:")) and target and target not in label:
                self._add(f" ({target})" if label else target)
        elif tag in self.PARAGRAPH:
            self._paragraph()
        elif tag in self.LINE:
            self._end_line()
        if tag == "blockquote":
            self.quote = max(0, self.quote - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
        elif tag in ("ul", "ol") and self.lists:
            self.lists.pop()

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.pre:
            for i, chunk in enumerate(data.split("\n")):
                if i:
                    self._break()
                self._add(chunk)
        else:
            data = re.sub(r"\s+", " ", data)
            if not self.current or self.trailing_space:
                data = data.lstrip()
            self._add(data)
        if self.link is not None:
            self.link[1].append(data)

    def text(self) -> str:
        self._end_line()
        out: list[str] = []
        for line in self.lines:
            if line == "" and (not out or out[-1] == ""):
                continue
            out.append(line)
        return "\n".join(out).strip()


#: HTML beyond this is not converted: the text is cut at MAX_TEXT_CHARS anyway, and html.parser is
#: pure Python — a 25 MB newsletter must not hold the poller or a gateway worker for seconds.
MAX_HTML_CHARS = 2_000_000


def html_to_text(html: str) -> str:
    parser = _HtmlText()
    parser.feed(html[:MAX_HTML_CHARS])
    parser.close()
    return parser.text()
