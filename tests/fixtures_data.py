"""Pytest fixtures for the data area (imported by conftest.py)."""
