"""Tests of cellstrata.measure."""
