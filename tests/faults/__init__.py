"""Concurrency and fault tests (issue 10): races, Redis/PostgreSQL outages, killed workers, scale-out."""
