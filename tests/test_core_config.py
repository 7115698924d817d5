"""The settings' bounds (charrnn.core.config and each task's config.py): every size option has a finite upper
bound, enforced by its config (the Python API, run.json) and shown and enforced by the command line."""

import pytest
from typer.testing import CliRunner

from charrnn.caption.config import MAX_CAPTION_LEN, MAX_IMAGE_SIZE, CaptionerConfig, CaptionTrainConfig
from charrnn.cli import app
from charrnn.core.config import MAX_BATCH_SIZE, MAX_CHANNELS, MAX_HIDDEN_SIZE, MAX_NUM_LAYERS
from charrnn.core.errors import CharRNNError
from charrnn.ctc.config import MAX_HEIGHT, MAX_WIDTH, CTCTrainConfig
from charrnn.lm.config import MAX_EVAL_STREAMS, MAX_SEQ_LEN, CharRNNConfig, LMTrainConfig

TOO_LARGE = [  # (config, field, its bound): each just past it is refused, naming the flag
    (LMTrainConfig, "hidden_size", MAX_HIDDEN_SIZE), (LMTrainConfig, "num_layers", MAX_NUM_LAYERS),
    (LMTrainConfig, "embedding_dim", 65536), (LMTrainConfig, "batch_size", MAX_BATCH_SIZE),
    (LMTrainConfig, "seq_len", MAX_SEQ_LEN), (LMTrainConfig, "eval_streams", MAX_EVAL_STREAMS),
    (CaptionTrainConfig, "image_size", MAX_IMAGE_SIZE), (CaptionTrainConfig, "hidden_size", MAX_HIDDEN_SIZE),
    (CaptionTrainConfig, "attention_dim", 65536), (CaptionTrainConfig, "embedding_dim", 65536),
    (CaptionTrainConfig, "max_caption_len", MAX_CAPTION_LEN), (CaptionTrainConfig, "batch_size", MAX_BATCH_SIZE),
    (CTCTrainConfig, "height", MAX_HEIGHT), (CTCTrainConfig, "max_width", MAX_WIDTH),
    (CTCTrainConfig, "hidden_size", MAX_HIDDEN_SIZE), (CTCTrainConfig, "num_layers", MAX_NUM_LAYERS),
]


@pytest.mark.parametrize("config, name, bound", TOO_LARGE, ids=[f"{c.__name__}.{n}" for c, n, _ in TOO_LARGE])
def test_every_size_setting_has_a_finite_bound(config, name, bound):
    flag = "--" + name.replace("_", "-")
    with pytest.raises(CharRNNError, match=rf"^{flag} must be at most {bound}, got {bound + 1}$"):
        config(**{name: bound + 1})


def test_channels_are_bounded_and_so_are_the_model_configs_checkpoints_are_read_into():
    for config in (CaptionTrainConfig, CTCTrainConfig):
        with pytest.raises(CharRNNError, match=rf"^--channels must each be at most {MAX_CHANNELS}, got 100000$"):
            config(channels="16,100000")
    with pytest.raises(CharRNNError, match="--hidden-size must be at most"):  # as a checkpoint's config is built
        CharRNNConfig(vocab_size=10, hidden_size=10**6)
    with pytest.raises(CharRNNError, match="--image-size must be at most"):
        CaptionerConfig(vocab_size=10, image_size=10**5)


@pytest.mark.parametrize("args, flag, bound", [
    (["caption", "train", "--image-size", "100000"], "--image-size", MAX_IMAGE_SIZE),
    (["caption", "train", "--hidden-size", "1000000"], "--hidden-size", MAX_HIDDEN_SIZE),
    (["caption", "train", "--max-caption-len", "1000000000"], "--max-caption-len", MAX_CAPTION_LEN),
    (["ctc", "train", "--max-width", "1000000000"], "--max-width", MAX_WIDTH),
    (["train", "--seq-len", "1000000"], "--seq-len", MAX_SEQ_LEN),
])
def test_the_command_line_refuses_sizes_past_the_bound_at_once_and_shows_the_range(args, flag, bound):
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.output
    assert flag in r.stderr and str(bound) in r.stderr
    help_text = CliRunner().invoke(app, [*args[:-2], "--help"], env={"COLUMNS": "250"}).stdout
    assert f"<=x<={bound}]" in help_text or f"[x<={bound}]" in help_text
