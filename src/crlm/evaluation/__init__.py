"""Evaluation of survival predictions: discrimination, accuracy, calibration and bootstrap intervals."""
