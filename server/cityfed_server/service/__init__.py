"""The coordinator's gRPC service over mutual TLS (``protos/cityfed/v1/service.proto``)."""
