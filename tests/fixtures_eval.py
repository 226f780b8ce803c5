"""Pytest fixtures for the eval area (imported by conftest.py)."""
