"""Evaluation reports, model comparison and ablations."""
