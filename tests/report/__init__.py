"""Tests of cellstrata.report."""
