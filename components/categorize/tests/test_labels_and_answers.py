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
