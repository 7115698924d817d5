"""What every task shares: the training loop, the run directory, the checkpoint format, settings, device,
tokenizer and the recurrent core."""
