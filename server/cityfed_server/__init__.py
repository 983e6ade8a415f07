"""The coordinator: ServerApp, training orchestration, publishing, the coordinator host."""
