"""A user's own labels for a corpus: a CSV table, one row per record, written into the corpus as a
task (``crema prepare SOURCE --labels FILE.csv`` and ``crema label DIR --labels FILE.csv``).

The steps, one module each:

* :mod:`.table`: :func:`read_labels_file` reads the table, its key column (the first of
  :data:`KEY_COLUMNS`), the optional ``patient_id``, ``split`` and ``fold`` columns, and the label
  columns (all others);
* :mod:`.task`: :func:`infer_task`, what the label columns describe: several 0/1 columns = a
  multi-label task whose classes are the columns; one 0/1 column = a binary task, stored as a
  one-class multi-label task named after the column; one numeric column with more than
  ``REGRESSION_MIN_VALUES`` distinct values = regression; any other single column = multi-class
  (its values are the classes, ``|`` inside a cell = several);
* :mod:`.match`: :func:`match_rows`, which corpus record each row names (its id, its path relative
  to the source with or without extension, its file name, or a stack's row id);
* :mod:`.split`: :func:`decide_split`, the split of the labelled records: the file's
  ``split``/``fold`` column, else the corpus's own split when another task already fixed it, else
  a seeded, stratified, patient-grouped 80/10/10 split (scikit-learn's ``StratifiedGroupKFold``
  over 10 folds); :func:`check_train_positives`;
* :mod:`.write`: :func:`label_corpus`, all of it written into a corpus folder (``index.csv`` label
  and split columns, ``classes.json``, ``tasks.json``, ``prepare_report.json``) without reading a
  signal; :func:`plan_labels` (the files checked before any corpus is read), :func:`add_labels`
  (``crema label``);
* :mod:`.summary`: what each task added reports (:func:`summary_lines`); :mod:`.cells`: the cell
  values and message pieces the steps share.

Every problem with a file is one :class:`~crema.errors.CremaError` naming the file; what is only
worth knowing (records without a row, rows without a record) goes into the returned summary and
``prepare_report.json``. The names below are the package's public API (docs/INTERFACES.md).
"""
from __future__ import annotations

from .match import Match, match_rows, record_table
from .split import Split, check_train_positives, decide_split
from .summary import summary_lines
from .table import KEY_COLUMNS, LabelsFile, read_labels_file
from .task import Task, infer_task
from .write import LabelsRequest, add_labels, label_corpus, plan_labels

__all__ = ["KEY_COLUMNS", "LabelsFile", "read_labels_file", "Task", "infer_task", "Match", "record_table",
           "match_rows", "Split", "decide_split", "check_train_positives", "LabelsRequest", "plan_labels",
           "label_corpus", "add_labels", "summary_lines"]
