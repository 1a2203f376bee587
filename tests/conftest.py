"""Shared test set-up: quiet TensorFlow, deterministic seeds, a bounded thread pool."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
