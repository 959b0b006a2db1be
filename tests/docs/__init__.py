"""Every command and snippet in README.md and docs/, run against a real nats-server."""
