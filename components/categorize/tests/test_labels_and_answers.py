"""Label list, prompt, merge table and answer format: the data files and the parsers."""

from __future__ import annotations

import json

import pytest
import yaml

from latent_verbalizer.components.categorize import answers
from latent_verbalizer.components.categorize.answers import (
    LABEL_NOT_IN_LIST,
    PART_NOT_IN_CAPTION,
    TRUNCATED,
    UNPARSEABLE,
    answer_bounds,
    answer_schema,
    max_answer_chars,
    parse_answer,
    parse_raw_answer,
    render_answer,
)
from latent_verbalizer.components.categorize.labelset import DEFAULT_LABELS, Part, load_labelset
from latent_verbalizer.components.categorize.merge_table import load_merge_table, merge_categories

STUDY_LABELS = """male, female, person, young, old, facial expression, hair color, hair style, body part,
object, furniture, vehicle, electronics, tools, toys, shape, texture, color, size,
material, pattern, composition, style, position, state, orientation, surface,
background, clothing, accessories, atmosphere, event, outdoor scene, indoor scene,
nature, plants, body of water, weather, season, buildings, lighting, food, drink,
dessert, fruits, sport, transportation, signs, animal, locations or places, rooms,
actions, interactions, relations, technology, numbers, time, UNKNOWN"""


def test_default_labels_are_the_studys_58():
    ls = load_labelset()
    assert ls.labels == [x.strip() for x in STUDY_LABELS.replace("\n", " ").split(",")]
    assert len(ls.labels) == 58


def test_merge_table_reproduces_the_study(reference_dir):
    ours = load_merge_table()
    ref = load_merge_table(str(reference_dir / "merged_categories.yaml"))
    assert ours == ref
    assert len(merge_categories(ours)) == 35
    # every label the prompt offers has a category of its own (none falls to UNKNOWN by accident)
    ls = load_labelset()
    assert [x for x in ls.labels if x not in ours] == []


def test_examples_are_valid_answers():
    ls = load_labelset()
    assert len(ls.examples) >= 3
    for ex in ls.examples:
        text = render_answer(ex.parts)
        parts, status = parse_answer(text, ex.caption, set(ls.labels))
        assert status == "ok" and list(parts) == list(ex.parts)
        assert len(text) <= max_answer_chars(ls, answer_bounds(ex.caption, ls.limits))


def test_bad_example_is_refused(tmp_path):
    data = yaml.safe_load(open(DEFAULT_LABELS))
    data["examples"][0]["parts"][0]["labels"] = ["action"]       # the study's most common off-list label
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="'action' not in the list"):
        load_labelset(str(p))
    with pytest.raises(FileNotFoundError, match="labels file"):
        load_labelset(str(tmp_path / "missing.yaml"))


def test_schema_bounds_and_worst_case_answer_is_accepted(tiny):
    """The longest answer the schema allows has exactly max_answer_chars characters and the
    grammar accepts it; max_new_tokens (chars + stop token) therefore never cuts an answer."""
    import xgrammar as xgr

    ls = tiny.ls
    lim = ls.limits
    longest = max(ls.labels, key=len)
    worst = [{"part": "x" * lim.max_part_chars, "labels": [longest] * lim.max_labels}] * lim.max_parts
    text = render_answer(worst)
    assert len(text) == max_answer_chars(ls, tiny.bounds) == tiny.max_new - 1
    m = xgr.GrammarMatcher(tiny.grammar)
    assert m.accept_string(text) and m.accept_token(tiny.stops[0]) and m.is_terminated()
    # what the schema refuses: too many parts, control characters, off-list labels, padded parts
    for bad in ([{"part": "x", "labels": ["color"]}] * (lim.max_parts + 1),
                [{"part": "a\tb", "labels": ["color"]}],
                [{"part": "a", "labels": ["action"]}],
                [{"part": " a", "labels": ["color"]}],
                [{"part": "a", "labels": []}]):
        assert not xgr.GrammarMatcher(tiny.grammar).accept_string(render_answer(bad)), bad
    assert answer_schema(ls, tiny.bounds)["items"]["properties"]["part"]["pattern"].startswith("^")


def test_parse_answer_flags():
    labels = {"color", "object"}
    parts, status = parse_answer('[{"part":"red","labels":["color"]},{"part":"red","labels":["color"]}]', "red red", labels)
    assert status == "ok" and len(parts) == 2                    # a repeated part survives
    assert parse_answer('[{"part":"blue","labels":["color"]}]', "red", labels)[1] == PART_NOT_IN_CAPTION
    assert parse_answer('[{"part":"red","labels":["colour"]}]', "red", labels)[1] == LABEL_NOT_IN_LIST
    assert parse_answer('[{"part":"red"', "red", labels) == ([], UNPARSEABLE)


def test_parse_raw_answer_keeps_duplicates_and_first_label():
    raw = '{   "summer": ["season","",""],   "and": ["UNKNOWN","",""],   "summer": ["season","",""],   "x": ["", "color", ""] }'
    parts, status = parse_raw_answer(raw, "summer and summer x", {"season", "UNKNOWN", "color"})
    assert [p.text for p in parts] == ["summer", "and", "summer", "x"]     # json.loads would keep one "summer"
    assert parts[0].labels == ("season",) and parts[3].labels == ("", "color")
    assert status == "ok"
    assert len(json.loads(raw)) == 3


def test_parse_raw_answer_truncated_and_broken():
    cut = '{  "red": ["color","",""],  "orange": ["color","",""],  "red": ["col'
    parts, status = parse_raw_answer(cut, "red orange red")
    assert status == TRUNCATED and [p.text for p in parts] == ["red", "orange"]
    parts, status = parse_raw_answer('{"it\\\'s": ["object"]}', "it's")
    assert status == UNPARSEABLE and parts[0].text == "it's"
    assert parse_raw_answer("I cannot help with that.") == ([], UNPARSEABLE)
    assert parse_raw_answer("{}")[1] == answers.NO_PARTS
    parts, status = parse_raw_answer('{"a dog": ["animal",],}', "a dog", {"animal"})   # trailing commas
    assert status == "ok" and parts == [Part("a dog", ("animal",))]


def test_nested_objects_in_raw_answers_give_their_string_labels():
    from latent_verbalizer.components.categorize.answers import parse_raw_answer

    parts, status = parse_raw_answer('{"a man": {"the": ["person", "", ""]}, "red": ["color", "", ""]}')
    assert [(p.text, p.labels) for p in parts] == [("a man", ("person",)), ("red", ("color",))]
    assert status == "ok"


def test_merge_table_label_under_two_categories_is_an_error(tmp_path):
    """Issue 12 item 8: one parser of the merge table, and a label listed under two
    categories is an error naming the label, both categories and the file."""
    path = tmp_path / "merge.yaml"
    path.write_text("colour:\n- color\n- hue\nperson:\n- male\nshade:\n- dark\n- hue\n")
    with pytest.raises(ValueError) as err:
        load_merge_table(str(path))
    for word in ("'hue'", "'colour'", "'shade'", str(path)):
        assert word in str(err.value)
    path.write_text("colour:\n- color\n- color\n")                 # twice under one category: the same mapping
    assert load_merge_table(str(path)) == {"color": "colour"}
    path.write_text("colour: color\n")
    with pytest.raises(ValueError, match="must list its labels"):
        load_merge_table(str(path))


def test_answer_bounds_follow_the_caption():
    """Issue 12 item 1: no fixed part cap; a caption's word count (and length) bound its answer."""
    from latent_verbalizer.components.categorize.answers import AnswerBounds

    ls = load_labelset()
    assert ls.limits.max_parts is None and ls.limits.max_part_chars is None
    assert answer_bounds("a dog", ls.limits) == AnswerBounds(4, 8)
    long_caption = " ".join(["summer swing"] * 15)                           # 30 words, 179 characters
    bounds = answer_bounds(long_caption, ls.limits)
    assert bounds == AnswerBounds(32, 256)
    schema = answer_schema(ls, bounds)
    assert schema["maxItems"] == 32 and schema["items"]["properties"]["labels"]["maxItems"] == 3
    capped = load_labelset().limits.__class__(max_parts=12, max_part_chars=40)
    assert answer_bounds(long_caption, capped) == AnswerBounds(12, 40)          # an explicit cap still applies


def test_study_answers_fit_the_bounds(reference_captions, reference_dir):
    """The study's answers on the reference captions: 1,758 of them had more than 12 parts
    (the old cap); under the caption-derived bounds only 12 reach a bound."""
    from latent_verbalizer.components.categorize.answers import limit_reached

    ls = load_labelset()
    over_12 = reached = parsed = 0
    for layer in range(24):
        raw = json.loads((reference_dir / "llama70b_labels" / f"layer_{layer}.json").read_text())
        for caption, text in zip(reference_captions[f"layer_{layer}"], raw):
            parts, status = parse_raw_answer(text, caption)
            if status in (TRUNCATED, UNPARSEABLE) or not parts:
                continue
            parsed += 1
            over_12 += len(parts) > 12
            reached += limit_reached(parts, answer_bounds(caption, ls.limits), complete=True)
    assert (parsed, over_12, reached) == (11838, 1758, 12)


def test_grammar_takes_as_many_parts_as_the_caption_has_words(tiny):
    """A 20-part answer of a 20-word caption: refused under the old 12-part cap, accepted now."""
    import xgrammar as xgr

    from latent_verbalizer.components.categorize.grammar import compile_answer_grammar

    ls = load_labelset()
    caption = " ".join(f"w{i}" for i in range(20))
    grammar = compile_answer_grammar(tiny.tok, ls, tiny.model.config.vocab_size, tiny.stops, answer_bounds(caption, ls.limits))
    answer = render_answer([Part(w, ("object",)) for w in caption.split()])
    matcher = xgr.GrammarMatcher(grammar)
    assert matcher.accept_string(answer) and matcher.accept_token(tiny.stops[0]) and matcher.is_terminated()


def test_answer_token_bound_covers_every_reference_answer(reference_dir, reference_captions):
    """The token bound stops no answer the study needed: each of the study's answers that parses,
    in this format, counted with the Llama-3 tokenizer, fits its caption's bound with room to
    spare (the schema's own bound, thousands of tokens, is what a runaway row used to decode to)."""
    from latent_verbalizer.components.categorize.answers import answer_token_bound, max_new_tokens
    from latent_verbalizer.components.categorize.import_raw import read_raw_answers
    from latent_verbalizer.components.categorize.llm.offline_llms import llama3_tokenizer

    try:
        tokenizer = llama3_tokenizer()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    ls = load_labelset()
    raw = read_raw_answers(str(reference_dir / "llama70b_labels"))
    parsed = [(caption, *parse_raw_answer(text, caption))
              for layer, texts in raw.items() for caption, text in zip(reference_captions[f"layer_{layer}"], texts)]
    # all but the study's answers cut at 1,024 tokens (runaway repetition) and the unparseable ones
    pairs = [(caption, parts) for caption, parts, status in parsed if status not in (TRUNCATED, UNPARSEABLE)]
    assert len(pairs) == 11_838
    texts = [render_answer(parts) for _, parts in pairs]
    counts = [len(ids) for ids in tokenizer(texts, add_special_tokens=False).input_ids]
    bounds = [answer_token_bound(caption, ls) for caption, _ in pairs]
    assert max(n / b for n, b in zip(counts, bounds)) < 0.7          # every answer, with >= 30% to spare
    assert max(counts) == 396 and 1024 >= max(bounds)
    ten_words = next(c for c, _ in pairs if len(c.split()) == 10)
    assert answer_token_bound(ten_words, ls) == 336 and max_new_tokens(ls, answer_bounds(ten_words, ls.limits)) >= 2450
