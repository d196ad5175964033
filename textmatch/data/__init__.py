"""Hugging Face `datasets` adapters: validation, loading and column mapping, K-shot samples and
class splits. Everything else in textmatch reads its data through here."""

from .loading import (
    FILE_BUILDERS,
    apply_column_mapping,
    as_text_label_lists,
    check_columns,
    column_values,
    dataset_columns,
    load_text_dataset,
    texts_and_labels,
)
from .sampling import rows_by_class, sample_dataset
from .splits import (
    ClassSplit,
    class_split_from_files,
    filter_classes,
    random_class_split,
    read_label_file,
)
from .validation import (
    check_conflicts,
    conflicting_labels,
    sorted_classes,
    validate_labels,
    validate_support,
    validate_texts,
)

__all__ = [
    "FILE_BUILDERS",
    "ClassSplit",
    "apply_column_mapping",
    "as_text_label_lists",
    "check_columns",
    "check_conflicts",
    "class_split_from_files",
    "column_values",
    "conflicting_labels",
    "dataset_columns",
    "filter_classes",
    "load_text_dataset",
    "random_class_split",
    "read_label_file",
    "rows_by_class",
    "sample_dataset",
    "sorted_classes",
    "texts_and_labels",
    "validate_labels",
    "validate_support",
    "validate_texts",
]
