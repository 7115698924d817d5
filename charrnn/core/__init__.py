"""What every task shares: the training loop, run directory, checkpoint format, settings, device, tokenizer, recurrent core."""
