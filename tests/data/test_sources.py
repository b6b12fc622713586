"""Reading documents: text (line and blank-line blocks), JSONL, CSV, the built-in corpus, bad input."""

from __future__ import annotations

import json

import pytest

from kerasboost.data.builtin import TOPICS, pydocs, pydocs_topics
from kerasboost.data.sources import read_documents as read_records
from kerasboost.data.sources import read_splits
from kerasboost.errors import DataError
from kerasboost.recipe import DataConfig


def read_documents(*args, **kwargs):
    """Texts only, for tests about reading text."""
    documents, report = read_records(*args, **kwargs)
    return [document.text for document in documents], report


def test_text_blank_line_blocks_and_lines(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first doc\nstill first\n\n\nsecond doc\n")
    blocks, _ = read_documents([str(path)], DataConfig())
    assert blocks == ["first doc\nstill first", "second doc"]
    lines, _ = read_documents([str(path)], DataConfig(document_split="line"))
    assert lines == ["first doc", "still first", "second doc"]


def test_globs_are_read_in_sorted_order(tmp_path):
    for name in ("b.txt", "a.txt"):
        (tmp_path / name).write_text(name)
    documents, _ = read_documents([str(tmp_path / "*.txt")], DataConfig())
    assert documents == ["a.txt", "b.txt"]


def test_non_utf8_lines_are_skipped_and_counted(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"good line\n\xff\xfe bad bytes\nanother good\n")
    documents, report = read_documents([str(path)], DataConfig(document_split="line"))
    assert documents == ["good line", "another good"]
    assert report.skipped == {"non-UTF-8 lines": 1}
    assert "1 non-UTF-8 lines" in report.describe()


def test_jsonl_field_bad_lines_and_missing_field(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"text": "one"})
        + "\nnot json\n"
        + json.dumps({"text": ""})
        + "\n"
        + json.dumps({"text": "two"})
        + "\n"
    )
    documents, report = read_documents([str(path)], DataConfig())
    assert documents == ["one", "two"]
    assert report.skipped == {"lines that are not JSON": 1, "empty records": 1}
    with pytest.raises(DataError, match=r"d.jsonl:1: no field 'body' \(data.field\); found: text"):
        read_documents([str(path)], DataConfig(field="body"))


def test_csv_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('id,text\n1,"hello, world"\n2,second\n')
    documents, _ = read_documents([str(path)], DataConfig())
    assert documents == ["hello, world", "second"]
    with pytest.raises(DataError, match=r"d.csv: no column 'body' \(data.field\); found: id, text"):
        read_documents([str(path)], DataConfig(field="body"))


def test_empty_and_missing_sources_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="data.source: no documents found in .*empty.txt"):
        read_documents([str(empty)], DataConfig())
    with pytest.raises(DataError, match="data.source: no file matches"):
        read_documents([str(tmp_path / "none*.txt")], DataConfig())
    with pytest.raises(DataError, match="unknown built-in corpus 'builtin:wiki'"):
        read_documents(["builtin:wiki"], DataConfig())


def test_labels_from_jsonl_and_csv(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(
        json.dumps({"text": "one", "label": "pos"}) + "\n" + json.dumps({"text": "two", "label": 3}) + "\n"
    )
    records, _ = read_records([str(jsonl)], DataConfig(), labels=True)
    assert [(r.text, r.label) for r in records] == [("one", "pos"), ("two", "3")]
    with pytest.raises(DataError, match=r"d.jsonl:1: no field 'topic' \(data.label_field\)"):
        read_records([str(jsonl)], DataConfig(label_field="topic"), labels=True)
    table = tmp_path / "d.csv"
    table.write_text("text,label\nhello,a\nworld,b\n")
    records, _ = read_records([str(table)], DataConfig(), labels=True)
    assert [(r.text, r.label) for r in records] == [("hello", "a"), ("world", "b")]
    with pytest.raises(DataError, match=r"d.csv: no column 'topic' \(data.label_field\); found: text, label"):
        read_records([str(table)], DataConfig(label_field="topic"), labels=True)
    text = tmp_path / "d.txt"
    text.write_text("no labels here")
    with pytest.raises(DataError, match="plain text has no labels"):
        read_records([str(text)], DataConfig(), labels=True)


def test_builtin_topics_are_a_labelled_subset():
    records = pydocs_topics()
    assert {r.label for r in records} == set(TOPICS)
    assert len(records) > 800


def test_builtin_pydocs_is_deterministic_and_labelled():
    documents = pydocs()
    assert len(documents) > 2000
    assert all(len(doc.text) >= 40 for doc in documents)
    assert {"json", "collections", "email"} <= {doc.label for doc in documents}
    pydocs.cache_clear()
    assert pydocs() == documents


def test_validation_split_is_seeded_and_disjoint(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("\n".join(f"document number {i}" for i in range(100)))
    config = DataConfig(source=str(path), document_split="line", validation_split=0.1)
    train, validation, _ = read_splits(config, seed=3)
    assert len(validation) == 10 and len(train) == 90 and not {d.text for d in train} & {d.text for d in validation}
    assert read_splits(config, seed=3)[1] == validation
    assert read_splits(config, seed=4)[1] != validation
