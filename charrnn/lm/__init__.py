"""The character language model: train, sample, evaluate."""
