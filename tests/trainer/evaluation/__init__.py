"""Evaluation, export and the report card (trainer/evaluation/, trainer/modeling/hf_export.py)."""
