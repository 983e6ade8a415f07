"""The published model: its record, its protobuf form and the scikit-learn estimators."""
