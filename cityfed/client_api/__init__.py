"""A client of the coordinator's gRPC service, for notebooks and the command line."""
