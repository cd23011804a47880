"""Hypernet training on Ray Train with DeepSpeed: recipe config, objectives, engine, worker loop, driver."""
