"""The whole federation on one machine: checks, Flower's simulation engine, the pooled check."""
