"""NATS JetStream: streams, publishing, session claims."""
