"""The cityfed command line."""
