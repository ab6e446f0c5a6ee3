"""slimgraph."""
