"""A benchmark's Markdown section goes to the terminal and, with ``--results FILE``, is appended
to that file (``benchmarks/RESULTS.md``) after a blank line."""

from __future__ import annotations


def publish(text: str, results: str | None) -> None:
    text = text.strip("\n") + "\n"
    print(text)
    if results:
        with open(results, "a") as f:
            f.write("\n" + text)
