"""Tests of cellstrata.singlecell."""
