"""``crema serve``: a local web viewer for one ECG at a time (see :mod:`crema.serve.app`)."""
