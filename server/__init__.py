"""The coordinator: the Flower ServerApp, exact aggregation and publishing."""
