import math

import pytest
import torch
import torch.nn.functional as F

from charrnn.core.config import CELLS
from charrnn.core.errors import CharRNNError
from charrnn.core.rnn import detach_state
from charrnn.lm.config import CharRNNConfig
from charrnn.lm.model import CharRNN


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("embedding_dim", [0, 8])
def test_shapes(cell, embedding_dim):
    model = CharRNN(CharRNNConfig(vocab_size=11, cell=cell, num_layers=2, hidden_size=16, embedding_dim=embedding_dim))
    x = torch.randint(0, 11, (3, 7))
    logits, state = model(x)
    assert logits.shape == (3, 7, 11)
    assert len(state) == (2 if cell == "lstm" else 1)
    assert all(s.shape == (2, 3, 16) for s in state)


@pytest.mark.parametrize("cell", CELLS)
def test_loss_at_init_is_about_ln_v(cell):
    torch.manual_seed(0)
    V = 65
    model = CharRNN(CharRNNConfig(vocab_size=V, cell=cell, hidden_size=64))
    x = torch.randint(0, V, (8, 32))
    logits, _ = model(x)
    loss = F.cross_entropy(logits.reshape(-1, V), torch.randint(0, V, (8 * 32,)))
    assert abs(loss.item() - math.log(V)) < 0.15


def test_lstm_forget_gate_bias_is_one():
    H = 8
    model = CharRNN(CharRNNConfig(vocab_size=5, cell="lstm", hidden_size=H, num_layers=2))
    for layer in range(2):
        total = getattr(model.rnn, f"bias_ih_l{layer}") + getattr(model.rnn, f"bias_hh_l{layer}")
        assert torch.allclose(total[H:2 * H], torch.ones(H))


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_finite_differences(cell):
    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(vocab_size=5, cell=cell, num_layers=2, hidden_size=4, embedding_dim=3)).double()
    x = torch.randint(0, 5, (2, 4))
    y = torch.randint(0, 5, (2, 4))
    names = [n for n, _ in model.named_parameters()]

    def loss_of(*flat):
        logits, _ = torch.func.functional_call(model, dict(zip(names, flat)), (x,))
        return F.cross_entropy(logits.reshape(-1, 5), y.reshape(-1))

    params = tuple(p.detach().clone().requires_grad_() for p in model.parameters())
    assert torch.autograd.gradcheck(loss_of, params, eps=1e-6, atol=1e-5)


def test_state_carries_information_and_detach_cuts_the_graph():
    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(vocab_size=6, cell="gru", hidden_size=8))
    x = torch.randint(0, 6, (2, 5))
    first, state = model(x)
    second, _ = model(x, state)
    assert not torch.allclose(first, second)  # the carried state changes the prediction
    first.sum().backward()  # frees the graph that produced `state`
    with pytest.raises(RuntimeError, match="second time"):
        model(x, state)[0].sum().backward()
    cut = detach_state(state)
    assert all(not s.requires_grad for s in cut)
    model(x, cut)[0].sum().backward()  # the cut state does not reach back into the freed graph
    # Two chunks with the state carried equal one long pass.
    whole, _ = model(torch.cat([x, x], 1))
    assert torch.allclose(whole[:, 5:], second, atol=1e-6)


def test_bad_config_is_a_clear_error():
    with pytest.raises(CharRNNError, match="--cell"):
        CharRNNConfig(vocab_size=5, cell="transformer")
    with pytest.raises(CharRNNError, match="--dropout"):
        CharRNNConfig(vocab_size=5, dropout=1.5)
