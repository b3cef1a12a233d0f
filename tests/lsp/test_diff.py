"""Unified diffs → text edits, checked against the document as the editor has it."""

from __future__ import annotations

import pytest

from lsp import diff

TEXT = "one\ntwo\nthree\nfour\n"


def patched(text: str, patch: str, path: str | None = None) -> str:
    lines = text.splitlines(keepends=True)
    return diff.apply(text, diff.to_edits(diff.parse(patch, path), lines))


@pytest.mark.parametrize(
    ("text", "patch", "expected"),
    [
        # replace one line, with context
        (TEXT, "@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n", "one\nTWO\nthree\nfour\n"),
        # with file headers, as git writes it
        (
            TEXT,
            "diff --git a/s.py b/s.py\n--- a/s.py\n+++ b/s.py\n@@ -4 +4,2 @@\n four\n+five\n",
            "one\ntwo\nthree\nfour\nfive\n",
        ),
        # pure insertion at the top
        (TEXT, "@@ -0,0 +1 @@\n+zero\n", "zero\none\ntwo\nthree\nfour\n"),
        # deletion
        (TEXT, "@@ -2,2 +1,0 @@\n-two\n-three\n", "one\nfour\n"),
        # two hunks
        (TEXT, "@@ -1 +1 @@\n-one\n+1\n@@ -4 +4 @@\n-four\n+4\n", "1\ntwo\nthree\n4\n"),
        # the file moved on by one line above the hunk: found nearby
        ("zero\n" + TEXT, "@@ -2 +2 @@\n-two\n+TWO\n", "zero\none\nTWO\nthree\nfour\n"),
        # a file without a final newline keeps that style
        ("a\nb", "@@ -2 +2,2 @@\n-b\n+B\n+c\n", "a\nB\nc"),
        # … unless the diff says it adds one
        ("a\nb", "@@ -2 +2 @@\n-b\n\\ No newline at end of file\n+B\n", "a\nB\n"),
        # appending after a last line without a newline
        ("a\nb", "@@ -2,0 +3 @@\n+c\n", "a\nb\nc"),
        # CRLF documents get CRLF lines
        ("a\r\nb\r\n", "@@ -1 +1 @@\n-a\n+A\n", "A\r\nb\r\n"),
        # columns count UTF-16 units: a line with an astral character is replaced whole
        ("x = '😀'\ny\n", "@@ -1 +1 @@\n-x = '😀'\n+x = 1\n", "x = 1\ny\n"),
    ],
)
def test_patches_apply(text: str, patch: str, expected: str) -> None:
    assert patched(text, patch) == expected


def test_picks_the_section_for_the_document() -> None:
    patch = (
        "--- a/other.py\n+++ b/other.py\n@@ -1 +1 @@\n-x\n+y\n"
        "--- a/src/s.py\n+++ b/src/s.py\n@@ -1 +1 @@\n-one\n+ONE\n"
    )
    assert patched(TEXT, patch, "src/s.py") == "ONE\ntwo\nthree\nfour\n"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ("no hunks here\n", "the patch holds no hunks"),
        ("@@ -1,2 +1,2 @@\n one\n", "ends in the middle of a hunk"),
        ("@@ -1,2 +1,2 @@\n one\n?two\n", "unexpected line inside a hunk"),
        ("@@ -2 +2 @@\n-deux\n+TWO\n", "does not match the document any more (expected 'deux'"),
        ("@@ -1,2 +1 @@\n-one\n-two\n+x\n@@ -2 +2 @@\n-two\n+y\n", "overlaps the one before"),
    ],
)
def test_refused(patch: str, message: str) -> None:
    with pytest.raises(diff.PatchError) as caught:
        patched(TEXT, patch)
    assert message in str(caught.value)
