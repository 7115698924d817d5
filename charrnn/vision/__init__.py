"""What the image tasks (caption, ctc) share: dataset roots, label files, image decoding and caching, CNN blocks."""
