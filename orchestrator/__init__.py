"""Training-cluster orchestration and reliability service."""

__version__ = "0.1.0"
