"""A city's data: reading, harmonisation into federation columns and units, the holdout split."""
