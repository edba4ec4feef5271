"""The model layer: what training writes and inference reads (artifacts, loading, explanation, metrics)."""
