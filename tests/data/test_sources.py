"""Reading documents as streams: text (lines, blank-line blocks), JSONL, CSV, compressed files, Parquet,
Arrow and datasets directories, globs and directories, the built-in corpus, progress bytes, bad input."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
from itertools import accumulate

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from kerasboost.data.builtin import TOPICS, pydocs, pydocs_topics
from kerasboost.data.sources import ReadReport, fingerprint, iter_documents, source_files
from kerasboost.data.sources import read_documents as read_records
from kerasboost.errors import DataError
from kerasboost.recipe import DataConfig

COMPRESSORS = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
}


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


def test_line_ends_and_chunk_boundaries_split_like_splitlines(tmp_path, monkeypatch):
    import kerasboost.data.sources as sources

    raw = b"a\r\nb\rc\n\r\n  d \r\r\ne\n\nf" + b"\n".join(b"line %d" % i for i in range(300)) + b"\r"
    path = tmp_path / "ends.txt"
    path.write_bytes(raw)
    expected = [line.decode() for line in raw.splitlines()]
    blocks, lines = [], []
    for chunk in (1, 2, 3, 7, 1 << 20):
        monkeypatch.setattr(sources, "_CHUNK", chunk)
        batches = list(sources._line_batches(path, None, ReadReport()))
        assert [line for _, batch in batches for line in batch] == expected, chunk
        assert [first for first, _ in batches] == list(accumulate([1] + [len(b) for _, b in batches[:-1]]))
        blocks.append(read_documents([str(path)], DataConfig())[0])
        lines.append(read_documents([str(path)], DataConfig(document_split="line"))[0])
    assert all(b == blocks[0] for b in blocks) and all(x == lines[0] for x in lines)
    assert blocks[0][:3] == ["a\nb\nc", "d", "e"]


def test_non_utf8_lines_are_skipped_and_counted(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"good line\n\xff\xfe bad bytes\nanother good\n")
    documents, report = read_documents([str(path)], DataConfig(document_split="line"))
    assert documents == ["good line", "another good"]
    assert report.skipped == {"non-UTF-8 lines": 1}
    assert "1 non-UTF-8 lines" in report.describe()
    blocks, _ = read_documents([str(path)], DataConfig())
    assert blocks == ["good line\nanother good"]


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
    path.write_bytes(b'{"text": "one"}\n\xff\n\n{"x": 1}\n')
    with pytest.raises(DataError, match=r"d.jsonl:4: no field 'text'"):
        read_documents([str(path)], DataConfig())


def test_csv_column_and_quoted_newlines(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('id,text\n1,"hello, world"\n2,second\n3,"two\nlines"\n')
    documents, _ = read_documents([str(path)], DataConfig())
    assert documents == ["hello, world", "second", "two\nlines"]
    with pytest.raises(DataError, match=r"d.csv: no column 'body' \(data.field\); found: id, text"):
        read_documents([str(path)], DataConfig(field="body"))


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_compressed_files_read_like_plain_ones(tmp_path, suffix):
    text = "".join(f"document {i} ünïcode\nmore of {i}\n\n" for i in range(200)).encode()
    jsonl = "".join(json.dumps({"text": f"record {i}", "label": i % 3}) + "\n" for i in range(200)).encode()
    table = ("text,label\n" + "".join(f'"row {i}\nsecond line",{i % 2}\n' for i in range(200))).encode()
    for name, data, labels in (("corpus.txt", text, False), ("corpus.jsonl", jsonl, True), ("t.csv", table, True)):
        plain, packed = tmp_path / name, tmp_path / (name + suffix)
        plain.write_bytes(data)
        packed.write_bytes(COMPRESSORS[suffix](data))
        expected, _ = read_records([str(plain)], DataConfig(), labels=labels)
        got, report = read_records([str(packed)], DataConfig(), labels=labels)
        assert got == expected and len(got) == 200
        assert report.bytes_read == report.total_bytes == packed.stat().st_size


def test_multi_frame_zstd_is_read_across_frames(tmp_path):
    path = tmp_path / "frames.txt.zst"
    compressor = zstandard.ZstdCompressor()
    path.write_bytes(compressor.compress(b"one\ntwo\n") + compressor.compress(b"three\n"))
    assert read_documents([str(path)], DataConfig(document_split="line"))[0] == ["one", "two", "three"]


@pytest.mark.parametrize("suffix", [".gz", ".zst", ".xz", ".bz2"])
def test_truncated_compressed_file_is_an_error_naming_it(tmp_path, suffix):
    data = "".join(f"line number {i} {i * i}\n" for i in range(20000)).encode()
    packed = COMPRESSORS[suffix](data)
    path = tmp_path / ("cut.txt" + suffix)
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match=r"cut\.txt\.\w+: truncated or corrupt \w+ data near byte \d+"):
        read_documents([str(path)], DataConfig())


def test_corrupt_gzip_is_an_error(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(b"this is not gzip at all\n")
    with pytest.raises(DataError, match=r"bad\.jsonl\.gz: truncated or corrupt gzip data near byte"):
        read_documents([str(path)], DataConfig())


def test_parquet_with_labels_nulls_and_missing_column(tmp_path):
    path = tmp_path / "d.parquet"
    texts = [f"text {i}" for i in range(10_000)] + [None, "  "]
    pq.write_table(pa.table({"id": range(10_002), "text": texts, "label": [i % 4 for i in range(10_002)]}), path)
    records, report = read_records([str(path)], DataConfig(), labels=True)
    assert len(records) == 10_000 and (records[0].text, records[0].label) == ("text 0", "0")
    assert records[-1] == records[-1].__class__("text 9999", "3")
    assert report.skipped == {"empty records": 2}
    assert report.bytes_read == report.total_bytes == path.stat().st_size
    with pytest.raises(DataError, match=r"d.parquet: no column 'body' \(data.field\); found: id, text, label"):
        read_records([str(path)], DataConfig(field="body"))
    with pytest.raises(DataError, match=r"d.parquet: no column 'topic' \(data.label_field\)"):
        read_records([str(path)], DataConfig(label_field="topic"), labels=True)
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet\n")
    with pytest.raises(DataError, match=r"fake.parquet: not a Parquet file"):
        read_records([str(fake)], DataConfig())


def test_arrow_file_stream_and_random_access(tmp_path):
    table = pa.table({"text": ["a b", "c d", None], "label": ["x", "y", "z"]})
    stream, random_access = tmp_path / "s.arrow", tmp_path / "f.arrow"
    with pa.OSFile(str(stream), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=1)
    with pa.OSFile(str(random_access), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=1)
    for path in (stream, random_access):
        records, report = read_records([str(path)], DataConfig(), labels=True)
        assert [(r.text, r.label) for r in records] == [("a b", "x"), ("c d", "y")]
        assert report.bytes_read == report.total_bytes
    with pytest.raises(DataError, match=r"s.arrow: no column 'body' \(data.field\); found: text, label"):
        read_records([str(stream)], DataConfig(field="body"))


def test_datasets_directory_and_dataset_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    train = datasets.Dataset.from_dict({"text": [f"train {i}" for i in range(50)], "label": [i % 2 for i in range(50)]})
    test = datasets.Dataset.from_dict({"text": ["test only"], "label": [0]})
    train.save_to_disk(str(tmp_path / "ds"), num_shards=2)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dd"))
    datasets.DatasetDict({"test": test, "validation": test}).save_to_disk(str(tmp_path / "no_train"))
    assert source_files(str(tmp_path / "ds")) == [tmp_path / "ds"]
    for name in ("ds", "dd"):
        records, report = read_records([str(tmp_path / name)], DataConfig(), labels=True)
        assert [(r.text, r.label) for r in records] == [(f"train {i}", str(i % 2)) for i in range(50)]
        assert report.bytes_read == report.total_bytes > 0
    with pytest.raises(DataError, match=r"no_train: a DatasetDict with no 'train' split \(splits: test, validation\)"):
        read_records([str(tmp_path / "no_train")], DataConfig())
    with pytest.raises(DataError, match=r"data-00000-of-00002.arrow: no column 'body' \(data.field\)"):
        read_records([str(tmp_path / "ds")], DataConfig(field="body"))
    # A directory holding a datasets directory reads it whole, not its .json files as JSONL.
    assert source_files(str(tmp_path)) == [tmp_path / "dd", tmp_path / "ds", tmp_path / "no_train"]


def test_globs_and_directories_are_expanded_sorted(tmp_path):
    for name in ("b.txt", "a.txt", "sub/c.txt", "sub/deeper/d.txt", ".hidden.txt", ".git/e.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    documents, _ = read_documents([str(tmp_path / "*.txt")], DataConfig())
    assert documents == ["a.txt", "b.txt"]
    assert source_files(str(tmp_path)) == [tmp_path / n for n in ("a.txt", "b.txt", "sub/c.txt", "sub/deeper/d.txt")]
    documents, _ = read_documents([str(tmp_path)], DataConfig())
    assert documents == ["a.txt", "b.txt", "sub/c.txt", "sub/deeper/d.txt"]
    assert source_files(str(tmp_path / "**" / "*.txt"))[-1] == tmp_path / "sub/deeper/d.txt"
    with pytest.raises(DataError, match=r"data.validation_source: no file matches '.*none\*\.txt'"):
        source_files(str(tmp_path / "none*.txt"), "data.validation_source")


def test_format_setting_overrides_the_file_name(tmp_path):
    path = tmp_path / "records.data.gz"
    path.write_bytes(gzip.compress(b'{"text": "from json"}\n'))
    assert read_documents([str(path)], DataConfig(format="jsonl"))[0] == ["from json"]
    assert read_documents([str(path)], DataConfig())[0] == ['{"text": "from json"}']


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


def test_max_documents_applies_across_sources(tmp_path):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("\n".join(f"{name} {i}" for i in range(5)))
    config = DataConfig(document_split="line", max_documents=7)
    documents, report = read_documents([str(tmp_path / "a.txt"), str(tmp_path / "b.txt")], config)
    assert documents[-1] == "b.txt 1" and len(documents) == report.documents == 7


def test_iter_documents_is_lazy_and_counts_bytes(tmp_path):
    path = tmp_path / "big.txt"
    path.write_bytes(b"".join(b"document %d with some words in it\n" % i for i in range(400_000)))
    size = path.stat().st_size
    report = ReadReport()
    stream = iter_documents(str(path), DataConfig(document_split="line"), report)
    assert report.total_bytes == 0  # nothing happens before iteration starts
    assert next(stream).text == "document 0 with some words in it"
    assert report.total_bytes == size and 0 < report.bytes_read < size / 4
    stream.close()
    packed = tmp_path / "big.txt.gz"
    packed.write_bytes(gzip.compress(path.read_bytes(), compresslevel=1))
    report = ReadReport()
    first = next(iter_documents(str(packed), DataConfig(document_split="line"), report))
    assert first.text == "document 0 with some words in it"
    assert 0 < report.bytes_read < packed.stat().st_size / 4
    report = ReadReport()
    count = sum(1 for _ in iter_documents(str(path), DataConfig(document_split="line"), report))
    assert count == 400_000 and report.bytes_read == report.total_bytes == size and report.documents == 0


def test_fingerprint_follows_the_content(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("one")
    before = fingerprint(str(path))
    assert before == fingerprint(str(tmp_path / "*.txt")) and str(path.resolve()) in before[0]
    path.write_text("one two")
    assert fingerprint(str(path)) != before
    grown = fingerprint(str(path))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same size, touched
    assert fingerprint(str(path)) != grown
    assert fingerprint("builtin:pydocs")[0] == "builtin:pydocs" and len(fingerprint("builtin:pydocs")) == 2
    with pytest.raises(DataError, match="unknown built-in corpus"):
        fingerprint("builtin:wiki")
    with pytest.raises(DataError, match="no file matches"):
        fingerprint(str(tmp_path / "none*"))


def test_fingerprint_of_a_datasets_directory(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["a", "b"]}).save_to_disk(str(tmp_path / "ds"))
    names = [entry.split(":")[0].rsplit("/", 1)[-1] for entry in fingerprint(str(tmp_path / "ds"))]
    assert names == ["data-00000-of-00001.arrow", "dataset_info.json", "state.json"]
    before = fingerprint(str(tmp_path / "ds"))
    datasets.Dataset.from_dict({"text": ["a", "b", "c"]}).save_to_disk(str(tmp_path / "ds2"))
    os.replace(tmp_path / "ds2" / "data-00000-of-00001.arrow", tmp_path / "ds" / "data-00000-of-00001.arrow")
    assert fingerprint(str(tmp_path / "ds")) != before


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
    report = ReadReport()
    assert tuple(iter_documents("builtin:pydocs", DataConfig(), report)) == documents
