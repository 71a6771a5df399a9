"""Emergify ingest: song uploads in (JSON or CSV), master dataset and Kafka out."""
