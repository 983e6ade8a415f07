"""The federation protocol and the outcome of a run: typed messages, no Flower import."""
