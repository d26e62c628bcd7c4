"""Tests of cellstrata.publication."""
