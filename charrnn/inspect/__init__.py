"""Looking inside a model: tracing, probes, the cell viewer, the activations file format."""
