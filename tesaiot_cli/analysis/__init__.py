"""Analysis of recordings: export, statistics, scores, plots."""
