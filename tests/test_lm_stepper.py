"""Stepper.step_rows: the stepper's arithmetic on states kept outside it (ctc's LM fusion keeps a table of them)."""

import pytest
import torch

from charrnn.core.config import CELLS
from charrnn.lm.config import CharRNNConfig
from charrnn.lm.model import CharRNN
from charrnn.lm.stepper import Stepper


def packed(state: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """A model state (tuple of (L, B, H)) as rows (B, S): [h_0 .. h_{L-1} | c_0 .. c_{L-1}]."""
    return torch.cat([t.transpose(0, 1).reshape(t.size(1), -1) for t in state], 1)


@pytest.mark.parametrize("cell", CELLS)
def test_step_rows_advances_packed_states_as_step_does(cell):
    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(vocab_size=11, cell=cell, num_layers=2, hidden_size=8, embedding_dim=4)).eval()
    stepper = Stepper(model, batch_size=5)
    stepper.step(torch.randint(0, 11, (5,)))  # some state that is not the zero state
    rows = packed(stepper.state())  # (5, S)
    x = torch.randint(0, 11, (5,))
    want = stepper.step(x).clone()
    other = Stepper(model, batch_size=1)  # whatever its own batch: step_rows steps any number of rows
    for n in (5, 3):  # fewer rows after more: the buffers it keeps are sliced, and stay out of the result
        got_rows = rows[:n].clone()
        torch.testing.assert_close(other.step_rows(got_rows, x[:n]), want[:n], atol=1e-6, rtol=0)
        torch.testing.assert_close(got_rows, packed(stepper.state())[:n], atol=1e-6, rtol=0)  # advanced in place
