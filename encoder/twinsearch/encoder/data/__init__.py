"""Labelled image data: sources (folders, zips, idx files), decoding and class splits."""

from .loading import ImageArrays, capped_per_class, decode_parts, item_indices, load_arrays, split_classes
from .sources import ImageSource, open_source, read_idx

__all__ = ["ImageArrays", "ImageSource", "capped_per_class", "decode_parts", "item_indices", "load_arrays", "open_source",
           "read_idx", "split_classes"]
