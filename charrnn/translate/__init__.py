"""charrnn translate: a character-level encoder-decoder with attention (sequence to sequence)."""
