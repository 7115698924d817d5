"""Using a tagger: the tags of each text (`charrnn tag predict`); a truecaser gives the text back with its
capital letters restored."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from charrnn.core.batches import in_batches
from charrnn.core.errors import CharRNNError
from charrnn.core.tokenizer import CharTokenizer
from charrnn.tag.data import lower_and_case_tags, restore_case
from charrnn.tag.evaluate import predict_tags
from charrnn.tag.model import Tagger, load_tagger

PREDICT_BATCH = 256  # texts read from a file or stdin are tagged this many at a time, as they come


def iter_tagged(model: Tagger, tokenizer: CharTokenizer, texts: Iterable[str], *, case: bool) -> Iterator[dict]:
    """{"text", "tags"} of each text, in order, and for a truecaser "truecased": the text with its capitals
    restored (the text is read lower-cased, as the truecaser was trained)."""
    for batch in in_batches(texts, PREDICT_BATCH):
        if not all(batch):
            raise CharRNNError("an empty text has no tags; give at least one character")
        inputs = [lower_and_case_tags(t)[0] for t in batch] if case else batch
        tags, _ = predict_tags(model, tokenizer, inputs)
        for text, read, tagged in zip(batch, inputs, tags):
            yield {"text": text, "tags": tagged, **({"truecased": restore_case(read, tagged)} if case else {})}


def tag_texts(checkpoint: str | os.PathLike, texts: list[str], *, device: str = "auto") -> list[dict]:
    """The tags of each text; for a truecaser also each text with its capital letters restored."""
    from charrnn.core.checkpoint import trained_with
    from charrnn.core.device import resolve_device
    from charrnn.tag.config import TagTrainConfig

    model, tokenizer, ckpt = load_tagger(checkpoint, resolve_device(device))
    case = trained_with(ckpt, TagTrainConfig).derive == "case"
    return list(iter_tagged(model, tokenizer, texts, case=case))
