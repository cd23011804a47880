"""t2l-ray: Text-to-LoRA hypernetworks trained and served on Ray."""

__version__ = "0.1.0"
