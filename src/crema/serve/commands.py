"""``crema serve MODEL``: the local ECG viewer (needs the ``serve`` extra: starlette, uvicorn,
python-multipart).

Only the standard library, ``config`` and ``errors`` are imported at the top: the CLI imports every
commands module to build its parser, so each command imports its torch/pandas/scipy machinery
inside its run function, and ``crema --help`` or a typo stays fast.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import CremaError, install_hint


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve", help="a local web viewer: drop an ECG, see its plot, predictions, reconstruction, neighbours",
        description="Serve a page on this machine where you drop one ECG file (any supported format; a WFDB "
                    "record as its .hea with its .dat/.mat) and see the 12-lead paper plot, the input contract "
                    "check, the predictions with their thresholds (classifier; a regression model: its predicted value), "
                    "the masked reconstruction "
                    "(pretrained model) and the most similar ECGs of a --reference set. Nothing is loaded from "
                    "or sent to the network. The viewer answers only its own host names and writes from its "
                    "own page; an upload is at most CREMA_MAX_UPLOAD_BYTES (default 200 MiB).")
    p.add_argument("checkpoint", help="classifier or pretrained checkpoint folder, exported model folder, or a "
                                      "shipped model's name (see crema models)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="another host name the page may be opened under (repeatable; 127.0.0.1, localhost, "
                        "[::1] and --host are always allowed; *.example.com allows its subdomains)")
    p.add_argument("--reference", help="ECGs to search for similar ones: a corpus DIR[:split], a folder or stack "
                                       "(embedded at start), or OUT.npy written by crema embed with this model")
    p.add_argument("--pretrained", help="pretrained checkpoint folder or shipped model's name for the "
                                        "reconstruction (default: MODEL when it is one, else the model a "
                                        "classifier was fine-tuned from)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:
        raise CremaError(f"crema serve needs the serve extra ({exc.name} is missing): "
                         f"{install_hint('serve')}") from None
    from .analysis import Viewer
    from .security import host_patterns

    hosts = [args.host, *args.allowed_host]
    host_patterns(hosts)  # a bad --allowed-host is refused before the model loads
    viewer = Viewer.from_paths(args.checkpoint, args.pretrained, args.reference, args.device, progress=True)
    print(f"crema serve: {viewer.model!r}; open http://{_url_host(args.host)}:{args.port}/ (Ctrl-C stops)",
          file=sys.stderr)
    uvicorn.run(create_app(viewer, hosts), host=args.host, port=args.port, log_level="warning")
    return 0


def _url_host(host: str) -> str:
    """The host part of the URL to open: an IPv6 address in brackets, every-address as 127.0.0.1."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
