"""Figures: reconstructions (viz.reconstruction), paper figures and embedding maps."""
