"""Per-character labelling (many-to-many, one label per input character): truecasing, or any tags."""
