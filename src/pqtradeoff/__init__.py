"""pqtradeoff: the probability-quality trade-off in aligned language models (Tan et al., EMNLP 2024)."""

__version__ = "0.1.0"
