"""The answer store's bookkeeping: which captions are answered (a restarted run's to-do list), from
the hash column alone, and the answers read back for the labels table without their raw text."""

from __future__ import annotations

from latent_verbalizer.components.categorize.answer_store import AnswerStore
from latent_verbalizer.components.common.contracts import caption_hash


def _answer(caption: str, status: str = "ok") -> dict:
    return {"caption": caption, "parts": [{"text": caption.split()[0], "labels": ["color"]}], "model": "m",
            "status": status, "answer": '{"parts": [...]} ' * 50, "n_new_tokens": 90}


def test_answered_hashes_of_several_writers(tmp_path):
    captions = [f"a red thing {i}" for i in range(300)]
    first, second = AnswerStore(str(tmp_path), "k", writer="r0"), AnswerStore(str(tmp_path), "k", writer="r1")
    first.write([_answer(c) for c in captions[:120]], {})
    first.write([_answer(c) for c in captions[120:200]], {})
    second.write([_answer(c) for c in captions[190:250]], {})         # 190..199 answered twice (a retried write)
    answered = AnswerStore(str(tmp_path), "k").answered_hashes()
    assert len(answered) == 250
    assert [caption_hash(c) in answered for c in captions] == [True] * 250 + [False] * 50
    assert caption_hash("never written") not in answered
    assert answered.missing(captions[::-1] + ["never written"]) == captions[250:][::-1] + ["never written"]
    assert answered.missing(captions + ["never written"], chunk=7) == captions[250:] + ["never written"]
    nothing = AnswerStore(str(tmp_path), "other-key").answered_hashes()
    assert len(nothing) == 0 and nothing.missing(captions[:3]) == captions[:3] and nothing.missing([]) == []


def test_load_keeps_the_raw_answers_in_the_files(tmp_path):
    store = AnswerStore(str(tmp_path), "k")
    store.write([_answer("a dog", "ok"), _answer("a cat", "label_not_in_list")], {})
    store.write([_answer("a dog", "unparseable")], {})                 # answered twice: the first counts
    done = store.load()
    assert set(done) == {caption_hash("a dog"), caption_hash("a cat")}
    # what the labels table takes; the raw answer text (the longest column) is not held in memory
    assert all(set(row) == {"caption_hash", "caption", "parts", "model", "status"} for row in done.values())
    assert done[caption_hash("a dog")]["status"] == "ok"
    assert done[caption_hash("a cat")]["parts"] == [{"text": "a", "labels": ["color"]}]
