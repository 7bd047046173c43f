"""qup: the Quality-Utility Paradox study as a Dagster asset graph."""

import os

# Weights and datasets are never fetched at run time: Hugging Face libraries read only local
# folders and the local HF cache. Set HF_HUB_OFFLINE=0 yourself to allow hub downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", os.environ["HF_HUB_OFFLINE"])
