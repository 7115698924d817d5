"""charrnn: character-level recurrent language models (RNN, LSTM, GRU) you train, sample and inspect.

The library is importable on its own; `charrnn.cli` is a thin Typer layer over it.
"""

__version__ = "0.4.0"
