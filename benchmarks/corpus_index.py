"""Opening a corpus of a million windows: time and peak memory of ``Corpus`` open, split
selection, a label filter and ``crema info``, from the columnar index (``index.npz``) and, for
comparison, from ``index.csv`` alone.

    python benchmarks/corpus_index.py                          # 10^6 windows, 3 repeats
    python benchmarks/corpus_index.py --rows 200000 --repeats 5
    python benchmarks/corpus_index.py --doc docs/BENCHMARKS.md # also rewrite its table there
    python benchmarks/corpus_index.py --pretrain-only --baseline results/bench/pretrain-open-before.json \
        --doc docs/BENCHMARKS.md                               # only the pretraining training set

The corpus is synthetic but shaped like a real one: two windows for every record, three sources,
PTB-XL-like ids, paths, ages (some missing), folds and splits, and the six PTB-XL label tasks with
realistic cells. It is written with the library's own ``write_index``; ``signals.npy`` is a
sparse file of the declared shape ``(N, 12, 2500)`` float16 (``np.lib.format.open_memmap`` on a
new file writes only its header), so it takes no disk space.

Every measurement runs in a fresh Python process; peak memory is that process's ``VmHWM``
(``/proc/self/status``, Linux), interpreter and imports included. Steps, each timed inside the
process after the imports, medians over ``--repeats``:

* reference: ``np.load`` of a ``uint8`` array as large as ``index.csv`` (reading that many bytes
  from the page cache; the ratio column divides each time by this one, measured in the same run);
* ``Corpus(DIR)``; ``corpus.rows("train")``; the label filter ``corpus.labels(task, rows)`` and
  its ``has_label`` mask; ``corpus.summary()`` (what ``crema info`` prints);
* ``crema info DIR``: the whole command in its process (``crema.cli.main``), imports included;
* the same open, rows, labels and summary from ``index.csv`` alone: a copy of the corpus folder
  without ``index.npz`` (as corpora made before it) where none can be written, so that the CSV
  is parsed every time (the summaries of both paths are checked to be the same);
* the one-time migration of such a corpus: its first open, which writes ``index.npz``;
* the pretraining training set ``crema pretrain --corpus DIR`` builds:
  ``crema.train.stream.open_pretrain_data([DIR], window, seed, view_crop)`` with ``RunConfig``'s
  defaults, imports excluded from its time but not from its peak; the child also reports a digest
  of the rows and patient codes it serves and whether a corpus's whole ``DataFrame``
  (``Corpus.index``) was built.

``--pretrain-only`` runs only that last step (its own table, between the pretrain-open-table
markers); ``--baseline JSON`` adds the rows of such a run made with other code (e.g. the commit
before a change: that ``src`` first on ``PYTHONPATH``, which the child processes inherit) and
checks that both served the same rows and patient codes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from doc_table import write_doc

HERE = Path(__file__).resolve().parent
DOC_START, DOC_END = "<!-- corpus-index-table:start -->", "<!-- corpus-index-table:end -->"
PRETRAIN_MARKERS = ("<!-- pretrain-open-table:start -->", "<!-- pretrain-open-table:end -->")
TARGET_S, TARGET_MB = 5.0, 500.0  # open + split + label filter + info, at 10^6 windows
TASK = "ptbxl-superdiagnostic"

# Runs in a fresh process: the steps on one corpus folder, then its peak memory.
_STEPS = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    from crema.data.corpus import Corpus
    folder, task = sys.argv[1], sys.argv[2]
    t1 = time.perf_counter()
    corpus = Corpus(folder)
    t2 = time.perf_counter()
    rows = corpus.rows("train")
    t3 = time.perf_counter()
    y, classes, has = corpus.labels(task, rows)
    kept = rows[has]
    t4 = time.perf_counter()
    text = corpus.summary()
    t5 = time.perf_counter()
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print(json.dumps(dict(import_s=t1 - t0, open_s=t2 - t1, rows_s=t3 - t2, labels_s=t4 - t3,
        summary_s=t5 - t4, total_s=t5 - t1, peak_mb=peak / 1024, rows=len(rows), kept=len(kept),
        windows=len(corpus), from_columns=corpus.columns.path is not None, summary=text)))
""")

_INFO = textwrap.dedent("""
    import contextlib, io, json, sys, time
    t0 = time.perf_counter()
    from crema.cli import main
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main(["info", sys.argv[1]])
    seconds = time.perf_counter() - t0
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print(json.dumps(dict(total_s=seconds, peak_mb=peak / 1024, code=code, text=out.getvalue())))
""")

# Runs in a fresh process: the training set `crema pretrain --corpus DIR` builds, with the
# RunConfig defaults; a digest of what it serves, to compare code before and after a change.
_PRETRAIN = textwrap.dedent("""
    import hashlib, json, sys, time
    t0 = time.perf_counter()
    import crema
    from crema.config import RunConfig
    from crema.train.stream import open_pretrain_data
    cfg = RunConfig()
    t1 = time.perf_counter()
    data = open_pretrain_data([sys.argv[1]], cfg.model.window, cfg.train.seed, cfg.objective.view_crop)
    t2 = time.perf_counter()
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
    parts = data.dataset.dataset.datasets
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.rows.astype("int64").tobytes())
    digest.update(data.dataset.patients.astype("int64").tobytes())
    print(json.dumps(dict(import_s=t1 - t0, open_s=t2 - t1, peak_mb=peak / 1024, items=len(data.dataset),
        patients=int(data.dataset.patients.max()) + 1 if len(data.dataset) else 0, digest=digest.hexdigest(),
        frame_built=any(part.corpus._index is not None for part in parts), crema=crema.__file__)))
""")

_REFERENCE = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    t0 = time.perf_counter()
    a = np.load(sys.argv[1])
    seconds = time.perf_counter() - t0
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print(json.dumps(dict(total_s=seconds, peak_mb=peak / 1024, bytes=int(a.nbytes))))
""")


# ----------------------------------------------------------------------------- the corpus

def make_corpus(folder: Path, n_rows: int, seed: int = 0) -> None:
    """A synthetic corpus folder of ``n_rows`` windows (see the module docstring)."""
    import pandas as pd

    from crema.config import PreprocessConfig
    from crema.config_io import save_json
    from crema.data.corpus_index import write_index

    rng = np.random.default_rng(seed)
    record = np.arange(n_rows) // 2
    n_records = int(record[-1]) + 1
    source = np.array(["ptbxl", "ningbo", "georgia"])[rng.integers(0, 3, n_records)][record]
    fold = rng.integers(1, 11, n_records)[record]
    statements = {  # task -> (classes, probability of a record having no statement)
        "ptbxl-superdiagnostic": (["CD", "HYP", "MI", "NORM", "STTC"], 0.02),
        "ptbxl-subdiagnostic": ([f"SUB{i}" for i in range(23)], 0.02),
        "ptbxl-diagnostic": ([f"DIA{i}" for i in range(44)], 0.02),
        "ptbxl-form": ([f"FORM{i}" for i in range(19)], 0.75),
        "ptbxl-rhythm": (["AFIB", "SARRH", "SBRAD", "SR", "STACH"], 0.2),
        "ptbxl-all": ([f"ALL{i}" for i in range(71)], 0.0),
    }
    frame = pd.DataFrame({
        "record_id": np.char.zfill(record.astype(str), 7), "source": source,
        "patient_id": (record // 3).astype(str), "fold": fold,
        "split": np.where(fold <= 8, "train", np.where(fold == 9, "val", "test")),
        "window": np.arange(n_rows) % 2, "start_s": (np.arange(n_rows) % 2) * 10.0,
        "original_fs": np.where(source == "ptbxl", 500.0, 257.0),
        "age": np.where(rng.random(n_records) < 0.05, np.nan, rng.integers(18, 91, n_records))[record],
        "sex": np.array(["M", "F", ""])[rng.integers(0, 3, n_records)][record],
        "source_id": np.char.add("ptbxl:", record.astype(str)),
        "path": np.char.add(np.char.add("records500/", np.char.zfill(record.astype(str), 7)), "_hr.hea"),
    })
    for task, (classes, none) in statements.items():
        cells = _cells(rng, classes, none, n_records)
        frame[f"labels:{task}"] = cells[record]
    folder.mkdir(parents=True, exist_ok=True)
    write_index(frame, folder)
    cfg = PreprocessConfig()
    np.save(folder / "lead_mask.npy", rng.random((n_rows, 12)) > 0.01)
    np.lib.format.open_memmap(folder / "signals.npy", mode="w+", dtype=np.float16,
                              shape=(n_rows, 12, cfg.window))  # sparse: only the header is written
    save_json(folder / "preprocess.json", cfg)
    save_json(folder / "classes.json", {t: c for t, (c, _) in statements.items()})
    save_json(folder / "prepare_report.json", dict(source="synthetic", kind="files", records_skipped=0,
                                                   split_method="hash of record id"))


def _cells(rng: np.random.Generator, classes: list[str], none: float, n: int) -> np.ndarray:
    """``n`` label cells: one to three classes joined by ``|`` (sorted), ``""`` with probability
    ``none``, drawn from a pool of 400 distinct combinations (as real statements repeat)."""
    pool = ["|".join(sorted(set(rng.choice(classes, size=rng.integers(1, 4))))) for _ in range(400)]
    cells = np.array(pool, dtype=object)[rng.integers(0, len(pool), n)]
    cells[rng.random(n) < none] = ""
    return cells


# ----------------------------------------------------------------------------- measuring

def run_child(script: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def csv_only_copy(corpus: Path, folder: Path, writable: bool = False) -> Path:
    """The corpus without ``index.npz`` (as corpora made before it). Unless ``writable``, an
    empty folder named ``index.npz`` stands in its way, so that no open can write one (whoever
    runs the benchmark, root included): every open parses ``index.csv``. Big files are linked."""
    folder.mkdir()
    for item in corpus.iterdir():
        if item.name == "index.npz":
            continue
        if item.stat().st_size > 1 << 20:
            os.link(item, folder / item.name)
        else:
            (folder / item.name).write_bytes(item.read_bytes())
    if not writable:
        (folder / "index.npz").mkdir()
    return folder


def measure(args: argparse.Namespace, base: Path) -> dict:
    corpus = base / "corpus"
    t0 = time.perf_counter()
    make_corpus(corpus, args.rows)
    build_s = time.perf_counter() - t0
    csv_bytes = (corpus / "index.csv").stat().st_size
    np.save(base / "reference.npy", np.zeros(csv_bytes, dtype=np.uint8))
    csv_only = csv_only_copy(corpus, base / "csv-only")
    runs: dict[str, list[dict]] = {k: [] for k in ("reference", "columns", "info", "csv", "migration", "pretrain")}
    for repeat in range(args.repeats):  # interleaved, so a busy neighbour slows all alike
        runs["reference"].append(run_child(_REFERENCE, str(base / "reference.npy")))
        runs["pretrain"].append(run_child(_PRETRAIN, str(corpus)))
        runs["columns"].append(run_child(_STEPS, str(corpus), TASK))
        runs["info"].append(run_child(_INFO, str(corpus)))
        runs["csv"].append(run_child(_STEPS, str(csv_only), TASK))
        migrate = csv_only_copy(corpus, base / f"migrate-{repeat}", writable=True)
        runs["migration"].append(run_child(_STEPS, str(migrate), TASK))
        if not (migrate / "index.npz").is_file():
            raise RuntimeError("the first open of a corpus without index.npz did not write it")
    check = runs["columns"][0]
    if not check["from_columns"] or runs["csv"][0]["from_columns"] or runs["migration"][0]["from_columns"]:
        raise RuntimeError("a run read the index another way than intended")
    body = _without_path(check["summary"])  # the first line names the folder
    if any(_without_path(r["summary"]) != body for r in runs["csv"] + runs["migration"]):
        raise RuntimeError("the CSV path printed another summary than the columns")
    if runs["info"][0]["code"] != 0 or body not in runs["info"][0]["text"]:
        raise RuntimeError("crema info printed another summary")
    for run in (r for group in runs.values() for r in group):
        run.pop("summary", None), run.pop("text", None), run.pop("crema", None)  # checked above; they name local folders
    return dict(rows=args.rows, repeats=args.repeats, index_csv_bytes=csv_bytes,
                index_npz_bytes=(corpus / "index.npz").stat().st_size, build_s=round(build_s, 2),
                train_rows=check["rows"], labelled_train_rows=check["kept"], task=TASK, runs=runs)


def measure_pretrain(args: argparse.Namespace, base: Path) -> dict:
    """``--pretrain-only``: the synthetic corpus and ``--repeats`` fresh processes that build the
    pretraining training set from it."""
    corpus = base / "corpus"
    make_corpus(corpus, args.rows)
    runs = [run_child(_PRETRAIN, str(corpus)) for _ in range(args.repeats)]
    if len({r["digest"] for r in runs}) != 1:
        raise RuntimeError("the pretraining data differed between runs of the same code")
    code = _code_version(Path(runs[0]["crema"]).resolve().parent.parent)
    for run in runs:
        run.pop("crema")  # a local folder; `code` says which source it held
    return dict(rows=args.rows, repeats=args.repeats, code=code, runs=runs)


def _code_version(src: Path) -> str:
    """The git commit of the ``src`` folder the children imported crema from (``+changes`` when
    its files differ from that commit), or ``unknown``."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", str(src), *cmd], capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no", "--", ".") else "")


def pretrain_markdown(result: dict, baseline: dict | None = None) -> str:
    """The pretrain-open table: seconds and peak of building the training set, this run and
    ``baseline`` (a ``--pretrain-only`` run of other code)."""
    lines = [f"`python benchmarks/corpus_index.py --pretrain-only --rows {result['rows']} --repeats "
             f"{result['repeats']}`: the training set `crema pretrain --corpus DIR` builds "
             f"(`open_pretrain_data`, `RunConfig` defaults) from the synthetic corpus of "
             f"{result['rows']:,} windows with its index.npz; medians of {result['repeats']} fresh "
             f"processes; peak = VmHWM of the process, imports included; {result['cpu_count']} CPUs, "
             f"load average {result['load_before']:.1f} before and {result['load_after']:.1f} after; "
             f"{result['created']}.",
             "",
             "| code | open_pretrain_data s | peak MB | items | DataFrame built |",
             "|---|---|---|---|---|"]
    measured = ([("before: " + baseline["code"], baseline)] if baseline else []) + [("now: " + result["code"], result)]
    for label, res in measured:
        runs = res["runs"]
        lines.append(f"| {label} | {median(runs, 'open_s'):.3f} | {median(runs, 'peak_mb'):.0f} | "
                     f"{runs[0]['items']:,} | {'yes' if runs[0]['frame_built'] else 'no'} |")
    if baseline:
        same = baseline["runs"][0]["digest"] == result["runs"][0]["digest"]
        lines += ["", "Same rows and patient codes served before and now (sha256 of both): "
                      + ("yes." if same else "**no**.")]
    return "\n".join(lines) + "\n"


def _without_path(summary: str) -> str:
    return summary.split("\n", 1)[1]


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def table_rows(result: dict) -> list[dict]:
    """One row per measured step: median seconds, median peak MB, ratio to the reference."""
    runs, ref = result["runs"], median(result["runs"]["reference"], "total_s")
    rows = [dict(step=f"reference: np.load of {result['index_csv_bytes'] / 1e6:.0f} MB (index.csv's size)",
                 seconds=ref, peak_mb=median(runs["reference"], "peak_mb"))]
    for key, label in (("columns", "index.npz"), ("csv", "index.csv only"), ("migration", "first open, writes index.npz")):
        if not runs[key]:
            continue
        for step, what in (("open_s", "Corpus(DIR)"), ("rows_s", 'rows("train")'),
                           ("labels_s", f"labels({TASK}, rows) + has_label filter"),
                           ("summary_s", "summary() (crema info's text)")):
            rows.append(dict(step=f"{label}: {what}", seconds=median(runs[key], step), peak_mb=None))
        rows.append(dict(step=f"{label}: all four", seconds=median(runs[key], "total_s"),
                         peak_mb=median(runs[key], "peak_mb")))
    if runs.get("pretrain"):  # JSON from before this step was measured has none
        rows.append(dict(step="index.npz: open_pretrain_data([DIR]) (`crema pretrain`'s training set)",
                         seconds=median(runs["pretrain"], "open_s"), peak_mb=median(runs["pretrain"], "peak_mb")))
    rows.append(dict(step="`crema info DIR` (the command, imports included)", seconds=median(runs["info"], "total_s"),
                     peak_mb=median(runs["info"], "peak_mb")))
    for row in rows:
        row["ratio"] = row["seconds"] / ref if ref > 0 else None
    return rows


def markdown(result: dict) -> str:
    rows = table_rows(result)
    lines = [f"`python benchmarks/corpus_index.py --rows {result['rows']} --repeats {result['repeats']}`: "
             f"{result['rows']:,} windows ({result['rows'] // 2:,} records), six PTB-XL-like label tasks; "
             f"index.csv {result['index_csv_bytes'] / 1e6:.0f} MB, index.npz {result['index_npz_bytes'] / 1e6:.0f} MB; "
             f"medians of {result['repeats']} fresh processes; peak = VmHWM of the process, imports included; "
             f"{result['cpu_count']} CPUs, load average {result['load_before']:.1f} before and "
             f"{result['load_after']:.1f} after; {result['created']}.",
             "",
             "| step | median s | peak MB | vs reference |",
             "|---|---|---|---|"]
    for r in rows:
        peak = f"{r['peak_mb']:.0f}" if r["peak_mb"] is not None else ""
        lines.append(f"| {r['step']} | {r['seconds']:.3f} | {peak} | {r['ratio']:.1f}x |")
    columns = next(r for r in rows if r["step"] == "index.npz: all four")
    info = rows[-1]
    worst_s, worst_mb = max(columns["seconds"], info["seconds"]), max(columns["peak_mb"], info["peak_mb"])
    met = worst_s < TARGET_S and worst_mb < TARGET_MB
    lines += ["", f"Target at 10^6 windows: open + split + label filter + info under {TARGET_S:g} s and "
                  f"{TARGET_MB:g} MB: {worst_s:.2f} s and {worst_mb:.0f} MB, "
                  f"{'met' if met else '**missed**'}" + ("" if result["rows"] == 10**6 else
                                                         f" (measured at {result['rows']:,} windows)") + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from crema.atomic import atomic_write_text

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=10**6, help="windows in the synthetic corpus")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("runs/bench/corpus_index.json"))
    p.add_argument("--render", type=Path, help="only print (and --doc) the table of this JSON")
    p.add_argument("--doc", type=Path, help="rewrite the table between the corpus-index-table markers "
                                            "of this file, e.g. docs/BENCHMARKS.md")
    p.add_argument("--tmp", type=Path, default=None, help="folder for the synthetic corpus (default: system temp)")
    p.add_argument("--pretrain-only", action="store_true",
                   help="time only the pretraining training set (its own table, pretrain-open-table markers)")
    p.add_argument("--baseline", type=Path, help="with --pretrain-only: a JSON of such a run with other code, "
                                                 "shown as 'before' and checked to serve the same rows")
    args = p.parse_args(argv)
    if args.pretrain_only and args.out == p.get_default("out"):
        args.out = Path("runs/bench/pretrain_open.json")
    if args.render:
        result = json.loads(args.render.read_text())
    else:
        if not Path("/proc/self/status").exists():
            print("needs Linux /proc for the peak memory", file=sys.stderr)
            return 1
        load_before = os.getloadavg()[0]
        with tempfile.TemporaryDirectory(prefix="crema-corpus-index-", dir=args.tmp) as tmp:
            result = (measure_pretrain if args.pretrain_only else measure)(args, Path(tmp))
        result.update(load_before=load_before, load_after=os.getloadavg()[0], cpu_count=os.cpu_count(),
                      python=platform.python_version(), numpy=np.__version__,
                      created=datetime.now(timezone.utc).strftime("%Y-%m-%d"))
        if not args.pretrain_only:
            result["table"] = table_rows(result)
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    if args.pretrain_only or "code" in result:
        baseline = json.loads(args.baseline.read_text()) if args.baseline else None
        table, markers = pretrain_markdown(result, baseline), PRETRAIN_MARKERS
    else:
        table, markers = markdown(result), (DOC_START, DOC_END)
    print(table)
    if args.doc:
        write_doc(args.doc, table, markers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
