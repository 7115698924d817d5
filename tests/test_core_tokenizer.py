import numpy as np
import pytest

from charrnn.core.errors import CharRNNError
from charrnn.core.tokenizer import CharTokenizer, dtype_for_vocab


def test_round_trip_unicode():
    text = "naïve café — 中文字符 😀🎉 e\u0301 \t\r\n"
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text
    # Chinese characters and emoji are single tokens, not their UTF-8 bytes.
    assert len(tok.encode("中😀")) == 2


def test_vocabulary_sorted_and_stable():
    a = CharTokenizer.from_text("banana")
    b = CharTokenizer.from_text("nab")
    assert a.codes == b.codes == sorted(map(ord, "abn"))
    assert a.eod_id == 3 and a.unk_id == 4 and a.vocab_size == 5


def test_serialisation_round_trip():
    tok = CharTokenizer.from_text("héllo\n\nworld", document_separator="\n\n")
    again = CharTokenizer.from_dict(tok.to_dict())
    assert again == tok and again.document_separator == "\n\n"


def test_unknown_characters_listed_or_mapped():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(CharRNNError) as e:
        tok.encode("abxyz")
    assert "'x'" in str(e.value) and "'z'" in str(e.value) and "--map-unknown" in str(e.value)
    ids = tok.encode("abx", map_unknown=True)
    assert ids.tolist() == [0, 1, tok.unk_id]
    assert tok.unknown_symbols("abxyx") == ["x", "y"]


def test_document_separator_becomes_eod():
    text = "a\n\nb\nc"
    tok = CharTokenizer.from_text(text, document_separator="\n\n")
    a, b, c, newline = (tok.codes.index(ord(ch)) for ch in "abc\n")
    ids = tok.encode(text)
    assert ids.tolist() == [a, tok.eod_id, b, newline, c]  # a single line break is no separator
    assert tok.decode(ids) == text


def test_byte_level_round_trip():
    data = "héllo 世界".encode() + b"\xff\x00"
    tok = CharTokenizer.from_text(data, byte_level=True)
    assert tok.decode_bytes(tok.encode(data)) == data
    assert len(tok.encode("é")) == 2  # two UTF-8 bytes


def test_compact_dtype():
    assert dtype_for_vocab(256) == np.uint8
    assert dtype_for_vocab(257) == np.uint16
    assert dtype_for_vocab(70000) == np.uint32
