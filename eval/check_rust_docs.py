#!/usr/bin/env python3
"""Check the rust-docs evaluation set (stdlib only).

For every answerable question that is not yes/no, at least one gold answer
must appear verbatim (case-insensitive) in the visible text of its page.
Also checks unique ids, required fields and the expected counts.

The expected counts default to those of rust-docs.json (90 answerable,
60 unanswerable, 30 answerable per book). A set of another size states its
own in an optional top-level "expect" object, e.g.
    "expect": {"answerable": 60, "unanswerable": 40, "per_book": 30}
Keys left out keep their defaults.

Usage: python3 eval/check_rust_docs.py [path/to/rust-docs.json]
"""
import json
import os
import re
import sys
from html.parser import HTMLParser

EXPECTED_ANSWERABLE = 90
EXPECTED_UNANSWERABLE = 60
EXPECTED_PER_BOOK = 30
MAX_PER_PAGE = 3
MAX_YES_NO = 10
SKIP_TAGS = {"script", "style", "nav", "noscript", "template"}
# mdbook chrome: sidebar, menu bar, search box
SKIP_IDS = ("mdbook-sidebar", "mdbook-menu-bar", "mdbook-search-wrapper",
            "sidebar", "menu-bar", "search-wrapper")
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input",
             "link", "meta", "param", "source", "track", "wbr"}


class VisibleText(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []
        self.skip_tag = None   # tag name that opened the skipped region
        self.skip_depth = 0    # nesting of that tag name inside the region

    def _is_skipped(self, tag, attrs):
        if tag in SKIP_TAGS:
            return True
        attrs = dict(attrs)
        ident = attrs.get("id") or ""
        classes = (attrs.get("class") or "").split()
        if ident in SKIP_IDS:
            return True
        if "sidebar" in classes or "menu-bar" in classes:
            return True
        return False

    def handle_starttag(self, tag, attrs):
        if tag in VOID_TAGS:
            return
        if self.skip_tag is not None:
            if tag == self.skip_tag:
                self.skip_depth += 1
            return
        if self._is_skipped(tag, attrs):
            self.skip_tag = tag
            self.skip_depth = 1

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if self.skip_tag is not None and tag == self.skip_tag:
            self.skip_depth -= 1
            if self.skip_depth == 0:
                self.skip_tag = None

    def handle_data(self, data):
        if self.skip_tag is None:
            self.parts.append(data)


def visible_text(path):
    with open(path, encoding="utf-8") as f:
        html = f.read()
    p = VisibleText()
    p.feed(html)
    p.close()
    return re.sub(r"\s+", " ", " ".join(p.parts)).strip()


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "rust-docs.json")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    books = data["books"]
    questions = data["questions"]
    expect = data.get("expect") or {}
    expected_answerable = expect.get("answerable", EXPECTED_ANSWERABLE)
    expected_unanswerable = expect.get("unanswerable", EXPECTED_UNANSWERABLE)
    expected_per_book = expect.get("per_book", EXPECTED_PER_BOOK)
    failures = []
    cache = {}

    ids = [q.get("id") for q in questions]
    seen = set()
    for i in ids:
        if i in seen:
            failures.append(f"duplicate id: {i}")
        seen.add(i)

    answerable = [q for q in questions if q.get("doc")]
    unanswerable = [q for q in questions if not q.get("doc")]
    if len(answerable) != expected_answerable:
        failures.append(f"answerable count {len(answerable)} != {expected_answerable}")
    if len(unanswerable) != expected_unanswerable:
        failures.append(f"unanswerable count {len(unanswerable)} != {expected_unanswerable}")

    per_book, per_page, yes_no = {}, {}, 0
    for q in questions:
        qid = q.get("id")
        for field in ("id", "book", "question", "answers"):
            if field not in q:
                failures.append(f"{qid}: missing field {field}")
        if q.get("book") not in books:
            failures.append(f"{qid}: unknown book {q.get('book')!r}")
            continue
        if not q.get("question", "").strip():
            failures.append(f"{qid}: empty question")
        if not q.get("doc"):
            if q.get("answers"):
                failures.append(f"{qid}: unanswerable question has answers")
            if q.get("kind") not in ("near-miss", "off-topic"):
                failures.append(f"{qid}: unanswerable kind must be near-miss or off-topic")
            continue
        per_book[q["book"]] = per_book.get(q["book"], 0) + 1
        key = (q["book"], q["doc"])
        per_page[key] = per_page.get(key, 0) + 1
        answers = q.get("answers") or []
        if not 1 <= len(answers) <= 3:
            failures.append(f"{qid}: expected 1-3 answers, got {len(answers)}")
        page = os.path.join(books[q["book"]], q["doc"])
        if not os.path.isfile(page):
            failures.append(f"{qid}: missing page {page}")
            continue
        if q.get("kind") == "yes-no":
            yes_no += 1
            continue
        if page not in cache:
            cache[page] = visible_text(page).lower()
        text = cache[page]
        if not any(a.strip() and a.lower() in text for a in answers):
            failures.append(f"{qid}: no gold answer found verbatim in {q['doc']}: {answers}")

    for book in books:
        if per_book.get(book, 0) != expected_per_book:
            failures.append(f"book {book}: {per_book.get(book, 0)} answerable != {expected_per_book}")
    for (book, doc), n in per_page.items():
        if n > MAX_PER_PAGE:
            failures.append(f"{book}/{doc}: {n} questions > {MAX_PER_PAGE}")
    if yes_no > MAX_YES_NO:
        failures.append(f"{yes_no} yes/no questions > {MAX_YES_NO}")

    kinds = {}
    for q in unanswerable:
        kinds[q.get("kind")] = kinds.get(q.get("kind"), 0) + 1
    print(f"questions: {len(questions)} (answerable {len(answerable)}, "
          f"unanswerable {len(unanswerable)})")
    print("answerable per book: " + ", ".join(f"{b}={per_book.get(b, 0)}" for b in books))
    print(f"distinct pages: {len(per_page)}; yes/no: {yes_no}")
    print("unanswerable kinds: " + ", ".join(f"{k}={v}" for k, v in sorted(kinds.items(), key=str)))
    if failures:
        print(f"\nFAILED ({len(failures)}):")
        for f in failures:
            print("  " + f)
        return 1
    print("OK: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
