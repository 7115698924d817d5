"""Reading text lines: CNN + bidirectional RNN trained with CTC, beam search fused with a charrnn LM."""
