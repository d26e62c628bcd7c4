"""Tests of cellstrata.stewardship."""
