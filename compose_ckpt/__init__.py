"""compose-ckpt: checkpoint and restore whole Docker Compose stacks with CRIU."""

__version__ = "0.1.0"
