"""crema serve against hostile use: foreign host names and origins, oversized bodies and fields,
declared-size and compression bombs, WFDB headers naming server files, odd file names, and
failures that must answer one line of JSON (never a traceback, never a server path)."""
from __future__ import annotations

import gc
import io
import json
import resource
import shutil
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from crema import limits
from crema.cli import main
from crema.data.readers import read_record
from crema.errors import CremaError

pytest.importorskip("starlette")
try:                                   # Starlette's TestClient: httpx2 (Starlette >= 1), else httpx
    import httpx2  # noqa: F401
except ImportError:
    pytest.importorskip("httpx")
import anyio  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from crema.serve import uploads  # noqa: E402
from crema.serve.analysis import Viewer  # noqa: E402
from crema.serve.app import INTERNAL_ERROR, STATIC, create_app  # noqa: E402
from crema.serve.security import WRITE_HEADER, host_patterns  # noqa: E402
from crema.serve.uploads import UploadTooLarge, upload_name  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OWN = "http://127.0.0.1:8765"
FOUR_XX = (400, 413, 422)


@pytest.fixture(scope="module")
def viewer(tiny_classifier_checkpoint, tiny_ptbxl_corpus):
    """The test classifier (its reconstruction drawn by the tiny pretrained model it was
    fine-tuned from) with the tiny corpus's test split as the reference set."""
    return Viewer.from_paths(tiny_classifier_checkpoint, reference=f"{tiny_ptbxl_corpus.path}:test", device="cpu")


@pytest.fixture(scope="module")
def app(viewer):
    return create_app(viewer)


@pytest.fixture(scope="module")
def client(app):
    """The page's own client; a failure shows as its response, not as an exception here."""
    return TestClient(app, base_url=OWN, headers={WRITE_HEADER: "1"}, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def record(ptbxl_headers):
    """PTB-XL record 1 (500 Hz from the shared data, else the sample's 100 Hz)."""
    return read_record(ptbxl_headers[0])


@pytest.fixture(scope="module")
def npy_bytes(record) -> bytes:
    """Record 1's signal as a ``(12, T)`` float32 .npy (needs ``fs``)."""
    buffer = io.BytesIO()
    np.save(buffer, record.signal.astype(np.float32))
    return buffer.getvalue()


def _post(client, files, data=None, **kw):
    """POST /api/analyze with ``files`` as ``[(name, bytes)]``."""
    return client.post("/api/analyze", files=[("files", f) for f in files], data=data or {}, **kw)


def _one_line_error(response, *statuses, echoed: str = "") -> str:
    """The JSON error of ``response``: one line, no traceback, no server folder (``echoed``: a path
    the client itself sent, which the message may quote)."""
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error and "\n" not in error and "Traceback" not in error, error
    assert "/tmp" not in error.replace(echoed, ""), error
    return error


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


# ----------------------------------------------------------------------------- hosts and origins

def test_only_the_viewers_own_host_names_are_answered(viewer, app):
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LOCALHOST"):
        assert TestClient(app, base_url=OWN).get("/api/info", headers={"Host": host}).status_code == 200, host
    # DNS rebinding: a page of another site whose name now points here sends its own name
    for host in ("evil.example:8765", "evil.example", "127.0.0.1.evil.example", ""):
        response = TestClient(app, base_url=OWN).get("/api/info", headers={"Host": host})
        assert response.status_code == 400 and "model" not in response.text, host
    named = TestClient(create_app(viewer, ["ECG.lan", "0.0.0.0"]), base_url="http://ecg.lan:9000")
    assert named.get("/api/info").status_code == 200
    assert host_patterns(["::1", "0.0.0.0", "*.hospital.example"]) == [
        "127.0.0.1", "localhost", "[::1]", "*.hospital.example"]
    for bad in ("*", "http://ecg.lan", "ecg.lan:80", "a*.b"):
        with pytest.raises(CremaError, match="allowed-host"):
            host_patterns([bad])


def test_cross_origin_and_headerless_writes_are_refused(client, app, npy_bytes, record):
    upload = [("rec.npy", npy_bytes)]
    fs = {"fs": str(record.fs)}
    refused = [{"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:9999"},
               {"Origin": "https://127.0.0.1:8765"}, {"Referer": "http://evil.example/page.html"},
               {"Origin": "http://evil.example", "Referer": OWN + "/"}]
    for headers in refused:
        error = _one_line_error(_post(client, upload, fs, headers=headers), 403)
        assert "not this viewer's page" in error, headers
    # a cross-site form post cannot add the header the page's script sends
    bare = TestClient(app, base_url=OWN, raise_server_exceptions=False)
    error = _one_line_error(_post(bare, upload, fs, headers={"Origin": OWN}), 403)
    assert WRITE_HEADER in error
    # the page itself (Origin, or Referer alone), and a client that sends neither (curl); a file the
    # readers refuse shows that the write reached the analysis
    assert _post(client, upload, fs, headers={"Origin": OWN}).status_code == 200
    for headers in ({"Origin": "http://127.0.0.1:8765/"}, {"Origin": "http://LOCALHOST:8765"},
                    {"Referer": OWN + "/"}, {}):
        host = {"Host": "localhost:8765"} if "LOCALHOST" in headers.get("Origin", "") else {}
        response = _post(client, [("x.edf", b"not an EDF")], headers={**headers, **host})
        assert response.status_code == 400 and "x.edf" in response.json()["error"], (headers, response.text)


def test_every_answer_carries_the_security_headers(client):
    for path in ("/", "/api/info", "/static/viewer.js", "/no/such/page"):
        response = client.get(path)
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
    assert client.get("/no/such/page").json() == {"error": "Not Found"}


def test_page_script_writes_text_never_html_and_sends_the_write_header():
    script = (STATIC / "viewer.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert '"X-Crema-Viewer"' in script and WRITE_HEADER == "x-crema-viewer"
    assert "style=" not in (STATIC / "index.html").read_text()  # the CSP allows no inline style


# ----------------------------------------------------------------------------- no server paths

def test_info_and_answers_name_no_server_folder(client, tiny_classifier_checkpoint, tiny_ptbxl_corpus,
                                               ptbxl_headers):
    info = client.get("/api/info").json()
    assert info["source"] == Path(tiny_classifier_checkpoint).name
    assert info["reference"]["where"] == f"{tiny_ptbxl_corpus.path.name}:test"
    assert info["upload_limit_bytes"] == limits.UPLOAD_BYTES.value()
    assert not [s for s in _strings(info) if "/" in s], info
    files = [(p.name, p.read_bytes()) for p in (ptbxl_headers[0], ptbxl_headers[0].with_suffix(".dat"))]
    answer = _post(client, files).json()
    sources = [n["source"] for n in answer["neighbours"]]
    assert sources and all(s.startswith(tiny_ptbxl_corpus.path.name + "[") for s in sources), sources
    text = json.dumps({k: v for k, v in answer.items() if not k.endswith("_png")})
    assert str(tiny_ptbxl_corpus.path.parent) not in text and "/tmp" not in text
    error = _one_line_error(_post(client, files[:1]), 400)      # the header alone
    assert error.startswith(ptbxl_headers[0].name + ": ") and "is missing" in error


# ----------------------------------------------------------------------------- limits

def test_upload_over_the_limit_is_refused_from_its_declared_length(client, monkeypatch):
    monkeypatch.setenv(limits.UPLOAD_BYTES.env, str(2**20))
    error = _one_line_error(_post(client, [("big.npy", bytes(2 * 2**20))]), 413)
    assert "upload size" in error and limits.UPLOAD_BYTES.env in error


def _asgi_post(app, chunks, headers: dict[str, str]):
    """POST ``chunks`` (an iterator, pulled only as the app reads) to /api/analyze straight
    through ASGI; ``(status, json, bytes the app pulled)``."""
    pulled = 0
    sent: list[dict] = []

    async def receive():
        nonlocal pulled
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/analyze", "raw_path": b"/api/analyze", "root_path": "", "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8765)}
    anyio.run(app, scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), pulled


def _multipart(boundary: str, name: str, filename: str | None, size: int, chunk: int = 2**16):
    """A multipart body with one part of ``size`` zero bytes, a chunk at a time."""
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    yield f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
    for _ in range(size // chunk):
        yield bytes(chunk)
    yield f"\r\n--{boundary}--\r\n".encode()


def test_body_without_a_length_stops_at_the_limit_and_memory_is_released(app, monkeypatch):
    limit, chunk = 2**20, 2**16
    monkeypatch.setenv(limits.UPLOAD_BYTES.env, str(limit))
    headers = {"host": "127.0.0.1:8765", WRITE_HEADER: "1", "content-type": "multipart/form-data; boundary=xyz"}
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        status, body, pulled = _asgi_post(app, _multipart("xyz", "files", "big.npy", 64 * limit, chunk), headers)
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 413 and limits.UPLOAD_BYTES.env in body["error"]
    assert pulled <= limit + 2 * chunk            # the other 63 MiB were never read
    assert peak - before < 8 * limit and after - before < limit // 4, (peak - before, after - before)
    # a declared length over the limit: refused before a byte is read
    status, body, pulled = _asgi_post(app, _multipart("xyz", "files", "big.npy", 64 * limit, chunk),
                                      {**headers, "content-length": str(2**40)})
    assert status == 413 and pulled == 0 and "upload size" in body["error"]


def test_form_field_is_bounded(app):
    headers = {"host": "127.0.0.1:8765", WRITE_HEADER: "1", "content-type": "multipart/form-data; boundary=xyz"}
    status, body, pulled = _asgi_post(app, _multipart("xyz", "leads", None, 32 * 2**20), headers)
    assert status == 413 and "leads" not in body["error"] and body["error"].startswith("the upload: ")
    assert pulled < 2**20                        # refused at 64 KiB, not after 32 MiB


def test_the_python_api_enforces_the_upload_limit_too(viewer, monkeypatch, npy_bytes):
    monkeypatch.setenv(limits.UPLOAD_BYTES.env, str(len(npy_bytes) - 1))
    with pytest.raises(UploadTooLarge, match=limits.UPLOAD_BYTES.env):
        viewer.analyze([("rec.npy", npy_bytes)], fs=500.0)


# ----------------------------------------------------------------------------- declared sizes, bombs

def _npy_declaring(shape, present: int = 1000) -> bytes:
    """A .npy whose header declares ``shape`` float32 followed by only ``present`` bytes."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': %r, }" % (tuple(shape),)
    header += " " * (118 - len(header)) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(present)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("shape", [(10**7, 12, 5000), (12, 2 * 10**8)], ids=["1e7-records", "9-GiB-record"])
def test_declared_size_far_over_the_bytes_is_a_4xx_with_flat_memory(client, shape):
    rss, started = _peak_rss_mib(), time.monotonic()
    error = _one_line_error(_post(client, [("huge.npy", _npy_declaring(shape))], {"fs": "500"}), *FOUR_XX)
    assert error.startswith("huge.npy") and time.monotonic() - started < 20
    assert _peak_rss_mib() - rss < 256


def test_record_over_the_record_limit_is_413(client, npy_bytes, record, monkeypatch):
    """Needs the readers' size guards (limits.RECORD_BYTES checked before reading)."""
    monkeypatch.setenv(limits.RECORD_BYTES.env, str(len(npy_bytes) // 4))
    error = _one_line_error(_post(client, [("rec.npy", npy_bytes)], {"fs": str(record.fs)}), 413)
    assert error.startswith("rec.npy") and limits.RECORD_BYTES.env in error


def test_npz_compression_bomb_is_413(client, record, monkeypatch, tmp_path):
    """Needs the readers' size guards (limits.DECOMPRESSED_BYTES checked while inflating)."""
    monkeypatch.setenv(limits.DECOMPRESSED_BYTES.env, str(4 * 2**20))
    beats = np.tile(record.signal[:, :1000].astype(np.float32), (1, 2**19 // 1000))   # ~10 min of one ECG
    np.savez_compressed(tmp_path / "bomb.npz", signal=beats, fs=record.fs)
    data = (tmp_path / "bomb.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "bomb.npz") as archive:
        assert len(data) < 2**18 < 2**24 < sum(i.file_size for i in archive.infolist())   # 24 MiB inside
    started = time.monotonic()
    error = _one_line_error(_post(client, [("bomb.npz", data)]), 413)
    assert error.startswith("bomb.npz") and limits.DECOMPRESSED_BYTES.env in error
    assert time.monotonic() - started < 20


# ----------------------------------------------------------------------------- confinement

@pytest.fixture
def server_record(ptbxl_headers, record, tmp_path):
    """A readable record that lies on the server outside any upload: the PTB-XL .dat, and a
    CinC-style .mat (``val``: int16 digital samples, 1000 units/mV) holding the same signal."""
    from scipy.io import savemat

    elsewhere = tmp_path / "some" / "where"
    elsewhere.mkdir(parents=True)
    # MATLAB v4: a 24-byte header, then the samples (what "16+24" in a CinC header describes)
    savemat(elsewhere / "patient.mat", {"val": np.round(record.signal * 1000).astype(np.int16)}, format="4")
    return ptbxl_headers[0], elsewhere / "patient.mat"


def _header_naming(record, signal_file: str, fmt: str = "16+24") -> bytes:
    lines = [f"patient {len(record.leads)} {record.fs:g} {record.signal.shape[1]}"]
    lines += [f"{signal_file} {fmt} 1000/mV 16 0 0 0 0 {lead}" for lead in record.leads]
    return ("\n".join(lines) + "\n").encode()


def test_a_header_may_not_name_a_server_file(client, server_record, record):
    """The readers' rule (a header names its signal files without a folder), seen from the viewer:
    without it, a header naming /some/where/patient.mat was answered with a plot of that file."""
    hea, mat = server_record
    named = [str(mat), str(hea.with_suffix(".dat").resolve()), f"../{mat.parent.name}/patient.mat",
             "/etc/passwd", "..", "sub/patient.mat", "..\\patient.mat"]
    for signal_file in named:
        response = _post(client, [("patient.hea", _header_naming(record, signal_file))])
        error = _one_line_error(response, 400, echoed=signal_file)
        assert error.startswith("patient.hea: ") and "by a path" in error, error
    # the same header naming the file uploaded beside it is read
    ok = _post(client, [("patient.hea", _header_naming(record, "patient.mat")), ("patient.mat", mat.read_bytes())])
    assert ok.status_code == 200 and ok.json()["fs"] == record.fs, ok.text[:300]


@pytest.mark.parametrize("how", ["external-storage", "external-link"])
def test_an_hdf5_upload_cannot_read_a_server_file(client, record, tmp_path, how):
    """Needs the stack reader's HDF5 rule (external storage, virtual datasets, external links)."""
    h5py = pytest.importorskip("h5py")
    rows = record.signal.T[None].astype("<f4")                      # (1, T, 12), the CODE-15% layout
    server_raw, server_h5 = tmp_path / "server.f32", tmp_path / "server.h5"
    server_raw.write_bytes(rows.tobytes())
    with h5py.File(server_h5, "w") as f:
        f.create_dataset("tracings", data=rows)
    upload = tmp_path / "upload.h5"
    with h5py.File(upload, "w") as f:
        if how == "external-storage":
            f.create_dataset("tracings", shape=rows.shape, dtype="<f4", external=[(str(server_raw), 0, rows.nbytes)])
        else:
            f["tracings"] = h5py.ExternalLink(str(server_h5), "tracings")
        f.attrs["fs"] = record.fs
    with h5py.File(upload, "r") as f:                                # the trap works: h5py reads the server file
        assert np.array_equal(f["tracings"][:], rows)
    error = _one_line_error(_post(client, [("upload.h5", upload.read_bytes())]), 400)
    assert error.startswith("upload.h5") and str(tmp_path) not in error


def test_an_uploaded_corpus_is_refused(client, tiny_ptbxl_corpus):
    files = [(p.name, p.read_bytes()) for p in tiny_ptbxl_corpus.path.iterdir()
             if p.name in ("signals.npy", "lead_mask.npy", "index.csv", "classes.json", "preprocess.json",
                           "prepare_report.json")]
    assert "prepared corpus" in _one_line_error(_post(client, files), 400)


# ----------------------------------------------------------------------------- file names

def test_upload_names_are_data():
    assert upload_name("/home/me/../rec.hea") == upload_name("rec.hea") == uploads.UploadName("rec.hea", "rec.hea")
    name = upload_name("C:\\Users\\me\\rec.hea")
    assert name.disk == "C:_Users_me_rec.hea" and name.shown == "C:\\Users\\me\\rec.hea"
    name = upload_name("../../etc/pass*wd[1]?.npy")
    assert name.disk == "pass_wd_1__.npy" and name.shown == "pass*wd[1]?.npy"
    name = upload_name("a\x00b\nc\udcff.npy")
    assert name.disk == "a_b_c_.npy" and name.shown == "a\\x00b\\nc\\xff.npy"
    assert upload_name(".hea").disk == "_.hea" and upload_name("..").disk == "_.."
    assert upload_name("").disk == "unnamed" and upload_name("/").shown == "(no name)"
    long = upload_name("é" * 300 + ".hea")
    assert long.disk.endswith(".hea") and len(long.disk.encode()) <= 200 and len(long.shown) <= 120
    assert upload_name("rec$\\frac{1}$.npy").disk == "rec$_frac{1}$.npy"


@pytest.mark.parametrize("name", ["r" * 300 + ".npy", "rec$\\frac{1}$.npy", "../<img src=x onerror=alert(1)>.npy"])
def test_odd_file_names_are_analysed_and_shown_as_text(client, npy_bytes, record, name):
    response = _post(client, [(name, npy_bytes)], {"fs": str(record.fs)})
    assert response.status_code == 200, response.text[:300]
    shown = response.json()["file"]
    assert shown == upload_name(name).shown and len(shown) <= 120 and "/" not in shown
    assert response.json()["plot_png"].startswith("data:image/png;base64,")
    assert response.json()["reconstruction_png"].startswith("data:image/png;base64,")


def test_two_files_under_one_name_are_refused(client, npy_bytes):
    error = _one_line_error(_post(client, [("a/rec.npy", npy_bytes), ("b/rec.npy", npy_bytes)]), 400)
    assert "both named rec.npy" in error


def test_crema_plot_draws_a_mathtext_file_name(tmp_path, record, capsys):
    path = tmp_path / "rec$\\frac{1}$.npy"
    np.save(path, record.signal.astype(np.float32))
    assert main(["plot", str(path), "--fs", str(record.fs), "--out", str(tmp_path / "ecg.png"), "--dpi", "50"]) == 0
    assert (tmp_path / "ecg.png").stat().st_size > 10_000


# ----------------------------------------------------------------------------- never a 500 with internals

def test_bad_uploads_get_one_line_never_a_500(client, ptbxl_headers):
    hea, dat = ptbxl_headers[0], ptbxl_headers[0].with_suffix(".dat")
    garbage = bytes(range(256)) * 8
    cases = [[(f"x{suffix}", garbage)] for suffix in
             (".hea", ".dat", ".mat", ".npy", ".npz", ".xml", ".edf", ".dcm", ".h5", ".csv", ".txt", ".json", "")]
    cases += [[("empty.npy", b"")], [("empty.hea", b"")],
              [(hea.name, hea.read_bytes()), (dat.name, dat.read_bytes()[:1000])],      # truncated signal
              [(hea.name, hea.read_bytes().replace(b"16", b"99")), (dat.name, dat.read_bytes())],
              [(hea.name, b"rec 12 nan 5000\n"), (dat.name, dat.read_bytes())],
              [("x.npy", _npy_declaring((12, 0), 0))], [("x.npy", _npy_declaring((3,), 12))]]
    for files in cases:
        response = _post(client, files)
        _one_line_error(response, *FOUR_XX)
    response = client.post("/api/analyze", content=b"not multipart", headers={"content-type": "text/plain"})
    assert _one_line_error(response, 400) == "no file uploaded"
    response = client.post("/api/analyze", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"})
    _one_line_error(response, 400)


def test_an_unexpected_failure_is_logged_and_answered_without_internals(client, viewer, npy_bytes, monkeypatch,
                                                                        caplog):
    def secret_failure(*args, **kwargs):
        raise RuntimeError("secret /srv/internal/path")

    monkeypatch.setattr(viewer, "_analyze_record", secret_failure)
    response = _post(client, [("rec.npy", npy_bytes)], {"fs": "500"})
    assert response.status_code == 500 and response.json() == {"error": INTERNAL_ERROR}
    assert "secret /srv/internal/path" in caplog.text and "Traceback" in caplog.text

    def value_failure(*args, **kwargs):
        raise ValueError("operands could not be broadcast\ntogether with shapes (3,) (4,)")

    monkeypatch.setattr(viewer, "_analyze_record", value_failure)
    error = _one_line_error(_post(client, [("rec.npy", npy_bytes)], {"fs": "500"}), 422)
    assert error == "rec.npy: cannot be analysed (operands could not be broadcast)"

    def out_of_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(viewer, "_analyze_record", out_of_memory)
    assert "too large" in _one_line_error(_post(client, [("rec.npy", npy_bytes)], {"fs": "500"}), 413)


# ----------------------------------------------------------------------------- shipped model names

@pytest.fixture(scope="module")
def classifier_from_shipped(tiny_classifier_checkpoint, tmp_path_factory) -> Path:
    """The test classifier, its config saying it was fine-tuned from the shipped crema-mini-ecg12."""
    folder = tmp_path_factory.mktemp("from_shipped") / "classifier"
    shutil.copytree(tiny_classifier_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "init": "crema-mini-ecg12"}))
    return folder


def test_reconstruction_follows_a_shipped_init_name(classifier_from_shipped, tmp_path):
    shown = Viewer.from_paths(classifier_from_shipped, device="cpu")
    assert shown.recon is not None and shown.recon.source.name == "crema-mini-ecg12"
    assert shown.recon.kind == "pretrain" and shown.info()["reconstruction"] is True
    config = json.loads((classifier_from_shipped / "config.json").read_text())
    for init in ("no-such-model", str(tmp_path / "gone"), "random"):
        other = tmp_path / f"ft-{len(init)}"
        shutil.copytree(classifier_from_shipped, other)
        (other / "config.json").write_text(json.dumps({**config, "init": init}))
        assert Viewer.from_paths(other, device="cpu").recon is None, init


def test_serve_and_plot_take_a_shipped_model_name(monkeypatch, tmp_path, npy_bytes, record, capsys):
    served = {}
    uvicorn = pytest.importorskip("uvicorn")
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: served.update(app=app, host=host, port=port))
    assert main(["serve", "crema-mini-ecg12", "--device", "cpu", "--port", "9001",
                 "--allowed-host", "ecg.lan"]) == 0
    client = TestClient(served["app"], base_url="http://ecg.lan:9001")
    info = client.get("/api/info").json()
    assert info["source"] == "crema-mini-ecg12" and info["kind"] == "pretrain" and info["reconstruction"]
    assert main(["serve", "crema-mini-ecg12", "--allowed-host", "*"]) == 1
    assert "allowed-host" in capsys.readouterr().err
    (tmp_path / "rec.npy").write_bytes(npy_bytes)
    code = main(["plot", str(tmp_path / "rec.npy"), "--fs", str(record.fs), "--out", str(tmp_path / "p.png"),
                 "--checkpoint", "crema-mini-ecg12", "--device", "cpu"])
    err = capsys.readouterr().err
    # the name is resolved to the shipped model, which is a pretrained one: plot says so
    assert code == 1 and "needs a fine-tuned classifier" in err and "no such" not in err, err
