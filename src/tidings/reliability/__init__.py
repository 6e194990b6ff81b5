"""Reliability: idempotent consumers, retries, dead letters and the transactional outbox."""
