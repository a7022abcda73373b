"""Datasets: the synthetic ALL-IDB generator, loaders and checks, and object storage."""
