"""The city node: a Flower ClientApp over the city's private data."""
