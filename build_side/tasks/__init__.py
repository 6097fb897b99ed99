"""Tasks a release is trained and judged on: their data, their scoring, their held-out sets."""
