"""Image captioning: a CNN encoder and an attending recurrent decoder."""
