import pytest
import torch

from charrnn.core.cells import GATES
from charrnn.core.config import CELLS
from charrnn.inspect.activations import trace_layer
from charrnn.lm.config import CharRNNConfig
from charrnn.lm.model import CharRNN


@pytest.mark.parametrize("cell", CELLS)
def test_hand_written_layers_match_torch_nn(cell):
    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(vocab_size=9, cell=cell, num_layers=2, hidden_size=12, embedding_dim=5)).double()
    x = torch.randint(0, 9, (3, 11))
    state = tuple(torch.randn(2, 3, 12, dtype=torch.double) for _ in range(model.num_state_tensors))
    out, final = model.rnn(model.embed(x), state if cell == "lstm" else state[0])
    final = final if isinstance(final, tuple) else (final,)
    inputs = model.embed(x)
    for layer in range(2):
        rec = trace_layer(cell, model.rnn, layer, inputs, state[0][layer], state[1][layer] if cell == "lstm" else None)
        assert set(rec) == {"h", *(["c"] if cell == "lstm" else []), *GATES[cell]}
        assert rec["h"].shape == (3, 11, 12)
        assert torch.allclose(rec["h"][:, -1], final[0][layer], atol=1e-10)
        if cell == "lstm":
            assert torch.allclose(rec["c"][:, -1], final[1][layer], atol=1e-10)
        inputs = rec["h"]
    assert torch.allclose(inputs, out, atol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers,embedding_dim", [(1, 0), (3, 6)])
@pytest.mark.parametrize("batch", [1, 4])  # batch 1 on the CPU takes the NumPy matrix-vector path
def test_stepper_matches_the_fused_forward(cell, num_layers, embedding_dim, batch):
    from charrnn.lm.stepper import Stepper

    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(vocab_size=13, cell=cell, num_layers=num_layers, hidden_size=16,
                                  embedding_dim=embedding_dim)).eval()
    x = torch.randint(0, 13, (batch, 9))
    prefix_logits, state = model(x[:, :3])
    full, final = model(x)
    stepper = Stepper(model, batch_size=batch)
    assert stepper.use_numpy == (batch == 1)
    stepper.load_state(state)
    for t in range(3, 9):
        logits = stepper.step(x[:, t])
        assert torch.allclose(logits, full[:, t], atol=1e-5), t
    for a, b in zip(stepper.state(), final):
        assert torch.allclose(a, b, atol=1e-5)
