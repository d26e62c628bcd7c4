"""Tests of cellstrata.profiles."""
