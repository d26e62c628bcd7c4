"""Tests of cellstrata.images."""
