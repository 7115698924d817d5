"""The line reader: CTC loss against enumeration, frame bookkeeping, learning, resume, evaluation, and the CLI."""

import itertools
import math

import pytest
import torch

from charrnn.config import CTCConfig
from charrnn.reader import LineReader, ctc_loss, frames


def collapse(path):
    out, previous = [], None
    for k in path:
        if k != previous and k != 0:
            out.append(k)
        previous = k
    return out


@pytest.mark.parametrize("target", [[1], [1, 2], [2, 2], [1, 2, 1]])
def test_ctc_loss_equals_the_sum_over_every_alignment(target):
    T, V = 5, 3
    log_probs = torch.randn(T, 1, V, generator=torch.Generator().manual_seed(len(target))).log_softmax(-1)
    total = sum(math.exp(sum(float(log_probs[t, 0, k]) for t, k in enumerate(path)))
                for path in itertools.product(range(V), repeat=T) if collapse(path) == target)
    loss = ctc_loss(log_probs, torch.tensor([T]), [target], reduction="sum")
    assert float(loss) == pytest.approx(-math.log(total), abs=1e-5)


def model(**kw) -> LineReader:
    torch.manual_seed(0)
    return LineReader(CTCConfig(vocab_size=6, height=16, channels=(4, 8, 8), hidden_size=8, **kw)).eval()


def test_frames_follow_each_lines_width_through_the_pooling():
    pixels = torch.zeros((3, 16, 103), dtype=torch.uint8)
    log_probs, lengths = model()(pixels, torch.tensor([103, 41, 7]))
    assert log_probs.shape == (103 // 4, 3, 6)
    assert lengths.tolist() == [frames(103), frames(41), frames(7)] == [25, 10, 1]
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(25, 3), atol=1e-5)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_a_lines_frames_do_not_depend_on_how_much_padding_follows(cell):
    # The backward direction must start at the line's own end: without packing it would first read the
    # padding, and the same line would be read differently in a batch of wider lines.
    m = model(cell=cell)
    line = torch.randint(0, 256, (1, 16, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    short = torch.nn.functional.pad(line, (0, 60))  # padded to 100 columns
    long = torch.nn.functional.pad(line, (0, 140))  # to 180
    with torch.no_grad():
        a, _ = m(short, torch.tensor([40]))
        b, _ = m(long, torch.tensor([40]))
    assert torch.allclose(a[:10], b[:10], atol=1e-5)
