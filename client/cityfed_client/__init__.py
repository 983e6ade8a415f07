"""The city node: the Flower ClientApp, the city's answers, holdout evaluation, the SuperNode."""
