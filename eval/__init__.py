"""Offline evaluation: predict, score, report, baselines. Import as `from eval.rouge import ...`."""
