"""Generated protobuf code of protos/cityfed/v1 (do not edit; see scripts/gen_protos.sh)."""
