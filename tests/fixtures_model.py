"""Pytest fixtures for the model area (imported by conftest.py)."""
