"""Metrics: clustering (pairwise/BCubed F-score, NMI) and dense labels (mIoU, PCK, depth errors)."""
