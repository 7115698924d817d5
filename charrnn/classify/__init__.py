"""Text classification (many-to-one): a character encoder pooled into one label per text."""
