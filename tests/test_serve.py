"""crema serve: the viewer's analysis and web app on real ECGs (Starlette's test client), and the
page end to end in a real headless Chromium driven by Playwright (skipped when either is missing;
`make browser-test` installs them)."""
from __future__ import annotations

import base64
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import crema
from crema.data import formats
from crema.data.readers import read_record
from crema.errors import ReadError

pytest.importorskip("starlette")
try:                                   # Starlette's TestClient: httpx2 (Starlette >= 1), else httpx
    import httpx2  # noqa: F401
except ImportError:
    pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from crema.serve.analysis import Viewer  # noqa: E402
from crema.serve.app import STATIC, create_app  # noqa: E402
from crema.serve.security import WRITE_HEADER  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


@pytest.fixture(scope="module")
def viewer(tiny_classifier_checkpoint, tiny_ptbxl_corpus):
    """The test classifier (fine-tuned from the tiny pretrained model, which draws the
    reconstruction) with the 80-record PTB-XL corpus (100 Hz files) as the reference set."""
    return Viewer.from_paths(tiny_classifier_checkpoint, reference=str(tiny_ptbxl_corpus.path), device="cpu")


@pytest.fixture(scope="module")
def client(viewer):
    """The page's own client: a host name the viewer answers, and the header its script sends."""
    return TestClient(create_app(viewer), base_url="http://127.0.0.1:8765", headers={WRITE_HEADER: "1"})


@pytest.fixture(scope="module")
def record_files(ptbxl_headers):
    """PTB-XL record 1: its .hea and .dat, at 500 Hz from the shared data (the reference holds its
    100 Hz version), else the sample's 100 Hz files (the very ones in the reference)."""
    header = ptbxl_headers[0]
    return [header, header.with_suffix(".dat")]


def _rate(record_files) -> int:
    return 500 if record_files[0].name.endswith("_hr.hea") else 100


def _upload(client, paths, **fields):
    files = [("files", (Path(p).name, Path(p).read_bytes())) for p in paths]
    return client.post("/api/analyze", files=files, data=fields)


def _png(data_url: str) -> bytes:
    assert data_url.startswith("data:image/png;base64,")
    png = base64.b64decode(data_url.split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return png


def test_page_is_served_locally(client):
    page = client.get("/")
    assert page.status_code == 200 and "CREMA ECG viewer" in page.text
    for name in ("viewer.js", "viewer.css"):
        assert client.get(f"/static/{name}").status_code == 200
    for path in STATIC.iterdir():      # nothing is fetched from another host
        text = path.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path.name
    info = client.get("/api/info").json()
    assert info["kind"] == "classifier" and info["reconstruction"] is True
    assert info["reference"]["records"] == 80 and len(info["classes"]) == len(info["thresholds"]) == 5


def test_analysis_of_a_real_record(client, tiny_classifier_checkpoint, record_files):
    response = _upload(client, record_files)
    assert response.status_code == 200, response.text
    r = response.json()
    assert r["file"] == record_files[0].name and r["fs"] == _rate(record_files) and r["windows"] == 1
    assert all(check["ok"] for check in r["contract"]["checks"])
    assert set(r["contract"]["leads"].values()) == {"recorded"}
    # the predictions are crema.load(...).predict's, with the checkpoint's thresholds
    model = crema.load(tiny_classifier_checkpoint, device="cpu")
    expected = model.predict(record_files[0]).iloc[0]
    for p, threshold in zip(r["predictions"], model.thresholds):
        assert p["probability"] == pytest.approx(expected[p["class"]], abs=1e-4)
        assert p["threshold"] == pytest.approx(threshold, abs=1e-4)
        assert p["positive"] == (expected[p["class"]] >= threshold)
    # the nearest reference ECG is the same record, recorded at 100 Hz in the reference corpus
    neighbours = r["neighbours"]
    assert len(neighbours) == 5 and neighbours[0]["record_id"] == "00001"
    assert neighbours[0]["similarity"] > 0.9 > neighbours[1]["similarity"]
    assert [n["similarity"] for n in neighbours] == sorted((n["similarity"] for n in neighbours), reverse=True)
    assert neighbours[0]["labels"] == "NORM"          # PTB-XL record 1 is a normal ECG
    assert len(_png(r["plot_png"])) > 50_000 and len(_png(r["reconstruction_png"])) > 30_000


def test_contract_flags_missing_derived_and_flat_leads(client, record_files, tmp_path):
    rec = read_record(record_files[0])
    keep = ["I", "II", "V1", "V2", "V3", "V4"]
    signal = np.stack([rec.signal[rec.leads.index(name)] for name in keep])
    signal[keep.index("V3")] = 0.0                     # a disconnected electrode
    np.savez(tmp_path / "six_leads.npz", signal=signal, fs=rec.fs, leads=np.array(keep))
    response = _upload(client, [tmp_path / "six_leads.npz"])
    assert response.status_code == 200, response.text
    contract = response.json()["contract"]
    states = contract["leads"]
    assert [states[n] for n in ("III", "aVR", "aVL", "aVF")] == ["derived"] * 4
    assert states["V3"] == "flat" and states["V5"] == states["V6"] == "missing"
    checks = {c["name"]: c for c in contract["checks"]}
    assert not checks["leads"]["ok"] and "V5, V6 missing" in checks["leads"]["detail"]
    assert not checks["flat leads"]["ok"] and "V3 flat" in checks["flat leads"]["detail"]
    assert checks["sampling rate"]["ok"] and "resampled to 250 Hz" in checks["sampling rate"]["detail"]


def test_bad_uploads_get_the_cli_message(client, record_files, tmp_path):
    broken = tmp_path / "broken.edf"
    broken.write_bytes(b"this is not an EDF file" * 20)
    with pytest.raises(ReadError) as cli_error:        # what crema embed reports for this file
        read_record(broken)
    response = _upload(client, [broken])
    assert response.status_code == 400
    # the same words, the file named as the user named it (no temporary folder)
    assert response.json()["error"] == f"broken.edf: {cli_error.value.problem}".replace(f"{tmp_path}{os.sep}", "")

    response = _upload(client, record_files[:1])       # a header without its signal file
    assert response.status_code == 400 and f"signal file {record_files[1].name} is missing" in response.json()["error"]
    np.save(tmp_path / "raw.npy", read_record(record_files[0]).signal)
    response = _upload(client, [tmp_path / "raw.npy"])
    assert response.status_code == 400 and "sampling rate unknown" in response.json()["error"]
    assert _upload(client, [tmp_path / "raw.npy"], fs=str(_rate(record_files))).status_code == 200
    response = _upload(client, [tmp_path / "raw.npy"], fs="5")
    assert response.status_code == 400 and "not a plausible ECG rate" in response.json()["error"]
    formats.write_edf(read_record(record_files[0]), tmp_path / "a.edf")
    shutil.copy(tmp_path / "a.edf", tmp_path / "b.edf")
    response = _upload(client, [tmp_path / "a.edf", tmp_path / "b.edf"])
    assert response.status_code == 400 and "holds 2 records" in response.json()["error"]


# ----------------------------------------------------------------------------- in a real browser

@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium and Playwright for Python, or a skip saying how to get them."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make browser-test)")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian's chromium is not installed (make browser-test)")
    return path


@pytest.fixture(scope="module")
def server(viewer):
    """The app on a free local port, served by uvicorn in a thread."""
    uvicorn = pytest.importorskip("uvicorn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(viewer), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the viewer did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_viewer_in_headless_chromium(chromium, server, record_files, tmp_path):
    from playwright.sync_api import sync_playwright

    broken = tmp_path / "broken.edf"
    broken.write_bytes(b"this is not an EDF file" * 20)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            requests = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(server + "/")
            page.wait_for_function("document.getElementById('model-info').textContent.includes('classifier')")
            page.set_input_files("#file-input", [str(p) for p in record_files])
            page.wait_for_selector("#results:not([hidden])", timeout=60_000)
            page.wait_for_function("document.getElementById('plot').complete && "
                                   "document.getElementById('plot').naturalWidth > 0")
            assert page.inner_text("#record-title").startswith(
                f"{record_files[0].name}: 10.0 s at {_rate(record_files)} Hz")
            assert page.locator("#contract td.ok").count() == 4 and page.locator("#contract td.bad").count() == 0
            assert page.locator("#predictions tbody tr").count() == 5
            assert page.inner_text("#neighbours tbody tr:first-child td:first-child") == "00001"
            assert page.locator("#reconstruction").evaluate("img => img.naturalWidth") > 500
            shot = tmp_path / "viewer.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 100_000
            if os.environ.get("CREMA_UPDATE_DOCS_IMG"):   # how docs/img/viewer.png was made
                shutil.copy(shot, DOCS_IMG / "viewer.png")
            # a bad file: the page shows the message and hides the old results
            page.set_input_files("#file-input", [str(broken)])
            page.wait_for_selector("#error:not([hidden])")
            assert page.inner_text("#error").startswith("broken.edf: not a readable EDF")
            assert page.locator("#results").is_hidden()
            # everything the page loaded came from the viewer itself
            assert requests and all(url.startswith(server) or url.startswith("data:") for url in requests)
        finally:
            browser.close()


def test_serve_command_is_registered():
    from crema.cli import build_parser

    args = build_parser().parse_args(["serve", "runs/ft", "--port", "9001", "--reference", "corpus:test"])
    assert args.command == "serve" and args.port == 9001 and args.host == "127.0.0.1"
    assert args.reference == "corpus:test" and args.func.__name__ == "run_serve"
