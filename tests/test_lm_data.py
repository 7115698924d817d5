import os

import numpy as np
import pytest

from charrnn.core.errors import CharRNNError
from charrnn.core.text import iter_text
from charrnn.core.tokenizer import CharTokenizer
from charrnn.lm.data import StreamBatches, build_tokenizer, encode_corpus, iter_encoded, split_ids


def test_batches_continue_streams():
    ids = np.arange(1000) % 251
    batches = StreamBatches(ids, batch_size=4, seq_len=10)
    x0, y0 = batches.batch(0)
    x1, _ = batches.batch(1)
    assert x0.shape == (4, 10)
    # Row k of batch i+1 continues row k of batch i; targets are inputs shifted by one.
    for k in range(4):
        assert x1[k, 0] == ids[k * batches.stream_len + 10]
        assert y0[k, :-1].tolist() == x0[k, 1:].tolist()
        assert y0[k, -1] == x1[k, 0]


def test_batches_too_short_is_a_clear_error():
    with pytest.raises(CharRNNError, match="too short for one batch"):
        StreamBatches(np.arange(50), batch_size=8, seq_len=16)


def test_split_is_contiguous_and_matches_nanogpt():
    text_len = 1000
    ids = np.arange(text_len + 1)  # <eod> + text
    train, val, test = split_ids(ids, 0.1)
    assert len(train) - 1 == int(text_len * 0.9) and len(val) == text_len - int(text_len * 0.9) and len(test) == 0
    assert val[0] == train[-1] + 1
    train, val, test = split_ids(ids, 0.1, 0.1)
    assert len(test) == 100 and test[0] == val[-1] + 1


def test_non_utf8_names_the_offset(tmp_path):
    p = tmp_path / "latin.txt"
    p.write_bytes("abc déf".encode("latin-1"))
    with pytest.raises(CharRNNError, match=r"offset 5.*--encoding.*--byte-level"):
        build_tokenizer(p)
    assert "é" in "".join(iter_text(p, encoding="latin-1"))


def test_offset_across_chunks(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(("é" * 10).encode() + b"\xff")
    with pytest.raises(CharRNNError, match="offset 20"):
        list(iter_text(p, chunk_bytes=3))


def test_bom_dropped_and_missing_or_empty_files(tmp_path):
    p = tmp_path / "bom.txt"
    p.write_bytes(b"\xef\xbb\xbfhi")
    assert "".join(iter_text(p)) == "hi"
    with pytest.raises(CharRNNError, match="no such file"):
        build_tokenizer(tmp_path / "nope.txt")
    with pytest.raises(CharRNNError, match="is a directory"):
        build_tokenizer(tmp_path)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(CharRNNError, match="is empty"):
        build_tokenizer(tmp_path / "empty.txt")


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64])
def test_chunked_encoding_equals_whole_text(tmp_path, chunk):
    text = "a\n\nb\n\n\nc\n\n\n\nd é 中\n\n"
    p = tmp_path / "docs.txt"
    p.write_text(text, encoding="utf-8")
    tok = CharTokenizer.from_text(text, document_separator="\n\n")
    whole = np.concatenate([[tok.eod_id], tok.encode(text)])
    chunked = np.concatenate(list(iter_encoded(p, tok, chunk_bytes=chunk)))
    assert chunked.tolist() == whole.tolist()


def test_rare_character_at_the_end_is_in_the_vocabulary(tmp_path):
    p = tmp_path / "late.txt"
    p.write_text("a" * 5000 + "ж", encoding="utf-8")
    tok = build_tokenizer(p)
    assert "ж" in tok.decode(range(len(tok.codes)))


def test_encoded_corpus_cached_and_compact(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("hello world\n" * 100)
    first = encode_corpus(p, tmp_path / "run")
    assert not first.reused and first.ids.dtype == np.uint8 and len(first.ids) == 1 + 1200
    again = encode_corpus(p, tmp_path / "run")
    assert again.reused and np.array_equal(np.asarray(again.ids), np.asarray(first.ids))
    p.write_text("hello there\n" * 100)
    changed = encode_corpus(p, tmp_path / "run")
    assert not changed.reused


@pytest.mark.parametrize("encoding, hint", [("utf-16", "UTF-16"), ("utf-16-le", "UTF-16-LE"),
                                            ("utf-16-be", "UTF-16-BE"), ("utf-32", "UTF-32")])
def test_wide_encodings_are_recognised_instead_of_trained_on(tmp_path, encoding, hint):
    p = tmp_path / "wide.txt"
    p.write_text("hello world, this is a text\n" * 10, encoding=encoding)
    for assumed in ("utf-8", "latin-1"):  # read byte by byte, every other character would be a NUL
        with pytest.raises(CharRNNError, match=f"looks like {hint} text; pass --encoding {encoding}"):
            list(iter_text(p, assumed))
    assert "".join(iter_text(p, encoding)) == "hello world, this is a text\n" * 10


def test_utf16_without_byte_order_mark_and_non_text_codecs_are_clear_errors(tmp_path):
    p = tmp_path / "le.txt"
    p.write_text("hello world\n" * 10, encoding="utf-16-le")
    with pytest.raises(CharRNNError, match="name the byte order: --encoding utf-16-le"):
        list(iter_text(p, "utf-16"))
    for codec in ("rot13", "hex", "zlib"):
        with pytest.raises(CharRNNError, match="is not a text encoding"):
            list(iter_text(p, codec))


def test_standard_input_and_pipes_are_refused_with_a_reason(tmp_path):
    with pytest.raises(CharRNNError, match="standard input"):
        list(iter_text("-"))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(CharRNNError, match="not a regular file"):
        list(iter_text(fifo))
