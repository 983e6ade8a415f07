"""Flower adapters: the wire encoding of the protocol and the exchange over a Grid."""
