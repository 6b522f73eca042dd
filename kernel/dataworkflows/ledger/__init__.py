"""The run ledger and durable queue: enqueue, claim and lease, the group-committed step
writer, events, resource links and the reads behind the API."""
