"""Reading labelled text: CSV/TSV, JSONL, CLINC150 JSON, Hugging Face datasets."""

from ember.data.loaders import Examples, load_examples
from ember.data.sample import spread

__all__ = ["Examples", "load_examples", "spread"]
