"""Reading labelled text: CSV/TSV, JSONL, folders of split files, CLINC150 JSON, Hugging Face datasets."""

from ember.data.examples import Examples
from ember.data.loaders import load_examples
from ember.data.sample import spread

__all__ = ["Examples", "load_examples", "spread"]
