"""Tests of cellstrata.workflow."""
