"""Recommendation data: loaders for the public formats, leave-one-out splits, the in-memory form."""

from .loaders import load_dataset_spec
from .schema import SPLITS, DataFormatError, RecData, Window
from .splits import leave_one_out, training_windows

__all__ = ["SPLITS", "DataFormatError", "RecData", "Window", "leave_one_out", "load_dataset_spec", "training_windows"]
