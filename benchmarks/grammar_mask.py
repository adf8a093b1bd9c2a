"""The answer grammar's token-mask cost per row and step, a part's length bound written as one
bounded repetition (``{0,254}``, the form used before) against the unrolled pieces of
``answers.part_pattern`` (the same language), with the tokenizers the pipeline labels with:
Llama-3's (128k tokens: tiny-random-llama and the study's Llama-3.1) and SmolLM2's (49k).

A row is walked through ``[{"part":"`` and then a long part of gibberish, as a random model
writes; each step fills the row's token mask (what ``GrammarLogitsProcessor`` does per row).

    python benchmarks/grammar_mask.py [--results benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import xgrammar as xgr
from markdown_results import publish  # noqa: E402  (benchmarks/, beside this script)

from latent_verbalizer.components.categorize.answers import _CHAR, _EDGE, part_pattern
from latent_verbalizer.components.categorize.llm.offline_llms import llama3_tokenizer

MAX_PART_CHARS = 256
PART_TEXT = "qx7 Zk!rr mmv0p;;a" * 12          # 216 characters: past the unrolled 128


def schema(pattern: str) -> str:
    return json.dumps({"type": "array", "minItems": 1, "maxItems": 5, "items": {
        "type": "object", "additionalProperties": False, "required": ["part", "labels"],
        "properties": {"part": {"type": "string", "pattern": pattern},
                       "labels": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"enum": ["colour", "animal"]}}}}})


def measure(tokenizer, pattern: str) -> tuple[float, float]:
    """(compile seconds, mean milliseconds per mask fill) of one walk through a long part."""
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer), stop_token_ids=[tokenizer.eos_token_id])
    t0 = time.perf_counter()
    grammar = xgr.GrammarCompiler(info, cache_enabled=False).compile_json_schema(
        schema(pattern), any_whitespace=False, separators=(",", ":"), strict_mode=True)
    compile_s = time.perf_counter() - t0
    matcher, bitmask = xgr.GrammarMatcher(grammar), xgr.allocate_token_bitmask(1, info.vocab_size)
    for token in tokenizer.encode('[{"part":"', add_special_tokens=False):
        assert matcher.accept_token(token)
    fills = []
    for token in tokenizer.encode(PART_TEXT, add_special_tokens=False):
        t0 = time.perf_counter()
        matcher.fill_next_token_bitmask(bitmask, 0)
        fills.append(time.perf_counter() - t0)
        assert matcher.accept_token(token), "the walk left the grammar"
    return compile_s, 1000 * sum(fills) / len(fills)


def tokenizers():
    from transformers import AutoTokenizer

    from latent_verbalizer.components.categorize.llm.gguf_conversion import smollm2_folder

    return {"Llama-3 (128k)": llama3_tokenizer(), "SmolLM2 (49k)": AutoTokenizer.from_pretrained(smollm2_folder())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=None, help="append the Markdown section to this file")
    args = parser.parse_args()
    one_repetition = f"^{_EDGE}({_CHAR}{{0,{MAX_PART_CHARS - 2}}}{_EDGE})?$"
    lines = [f"## Answer grammar: token mask per row and step ({platform.processor() or platform.machine()}, one core)", "",
             f"A part of up to {MAX_PART_CHARS} characters; a row writing {len(PART_TEXT)} characters of gibberish "
             "(`benchmarks/grammar_mask.py`).", "",
             "| tokenizer | pattern | compile | mask per row and step | ratio |", "|---|---|---|---|---|"]
    for name, tokenizer in tokenizers().items():
        before = measure(tokenizer, one_repetition)
        after = measure(tokenizer, part_pattern(MAX_PART_CHARS))
        for label, (compile_s, fill_ms) in (("one repetition {0,254}", before), ("unrolled (part_pattern)", after)):
            ratio = f"{before[1] / fill_ms:.0f}x" if label.startswith("unrolled") else "1x"
            lines.append(f"| {name} | {label} | {compile_s:.2f} s | {fill_ms:.2f} ms | {ratio} |")
    text = "\n".join(lines) + "\n"
    publish(text, args.results)


if __name__ == "__main__":
    main()
