"""The training data, read and tokenised once, into an on-disk Arrow cache under the run directory.

    DIR/cache/rows-<key>/     validated rows, split into train/ and validation/ (datasets' save_to_disk),
                              and load_report.json (what was skipped and why)
    DIR/cache/tokens-<key>/   train.arrow, validation.arrow: study_id, input_ids, labels, length_key

The rows key is a hash of the data files' contents and of the settings that decide the rows (validation file
or held-out fraction and seed, skip_bad_rows); the tokens key adds the tokenizer (its serialised vocabulary
and rules), the prompt template and the token limits. Changing any of them makes a new directory; an
unchanged rerun or a resume reads the existing one, memory-mapped, so no rank parses or tokenises again and
memory stays flat however large the corpus. A directory appears in one rename only once complete; old
directories are left for the user to delete.

Rows are built before any process group exists (a bad row or an empty split fails with exit 2 before
anything is written): local rank 0 of every node reads and checks the files, the other local ranks wait for
the directory (nodes need not share a disk; on a shared one, the first complete copy wins). Tokens are built
after the process group starts, by each node's main process first (`local_main_process_first`), the others
then read them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from dataclasses import asdict
from pathlib import Path

from radreport.io import atomic_write_json
from radreport.schema import DataError, Example, LoadReport, load_examples
from train.config import TrainConfig

CACHE_VERSION = 1  # bump when what a cache directory holds changes
ROW_COLUMNS = ("study_id", "subject_id", "findings", "impression", "background")
SPLITS = ("train", "validation")


def cache_dir(output_dir: Path) -> Path:
    return output_dir / "cache"


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def tokenizer_digest(tokenizer) -> str:
    """sha256 of what decides a tokenizer's ids: a fast tokenizer's full serialisation (vocabulary,
    normaliser, pre-tokeniser, post-processor), else its vocabulary; plus its special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    special = json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str)
    return _digest(type(tokenizer).__name__, body, special)


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()


def rows_key(cfg: TrainConfig) -> str:
    d = cfg.data
    split = ("file", file_digest(d.validation)) if d.validation else ("held out", d.val_fraction, cfg.seed)
    return _digest(CACHE_VERSION, "rows", file_digest(d.train), split, d.skip_bad_rows)


def tokens_key(cfg: TrainConfig, rows: str, tokenizer) -> str:
    d = cfg.data
    return _digest(
        CACHE_VERSION, "tokens", rows, tokenizer_digest(tokenizer), d.prompt_template, d.max_source_tokens,
        d.max_target_tokens,
    )  # fmt: skip


# ---- rows: before any process group -------------------------------------------------------------------------


def read_and_split(cfg: TrainConfig) -> tuple[list[Example], list[Example], list[str]]:
    """Load and check the data files, hold out validation rows if needed; refuse a split that comes out empty.

    Returns (train rows, validation rows, report lines). Errors name the config key."""
    from train.prepare import split_holdout

    d, lines = cfg.data, []

    def load(key: str) -> list[Example]:
        path = getattr(d, key)
        report = LoadReport(path)
        try:
            rows = load_examples(path, skip_bad=d.skip_bad_rows, report=report)
        except DataError as e:  # e.g. every row of the file skipped: "no usable rows"
            raise DataError(f"data.{key}: {e}") from None
        lines.append(report.summary())
        lines.extend(f"  {err}" for err in report.first_errors)
        return rows

    train = load("train")
    if d.validation:
        return train, load("validation"), lines
    n = len(train)
    # split_holdout holds out at least one row; a fraction that rounds to none is a config mistake to name
    if round(d.val_fraction * n) == 0:
        val = []
    else:
        train, val = split_holdout(train, d.val_fraction, cfg.seed, source=f"data.train ({d.train})")
    if not val:
        raise DataError(
            f"data.val_fraction: {d.val_fraction} of the {n} rows of {d.train} holds out no validation row; "
            "raise it or name a data.validation file"
        )
    if not train:
        raise DataError(
            f"data.val_fraction: holding out {d.val_fraction} of {d.train} leaves no training row (rows with "
            "the same findings stay on one side); lower it or name a data.validation file"
        )
    lines.append(f"held out {len(val)} validation rows (findings-disjoint), {len(train)} left to train on")
    return train, val, lines


def prepare_rows(cfg: TrainConfig, output_dir: Path, wait_s: float = 3600) -> Path:
    """The rows cache directory for this config, built by local rank 0 if missing (see module doc)."""
    import datasets

    datasets.disable_progress_bars()  # the log says what was built; per-batch bars only bury it
    key = rows_key(cfg)
    final = cache_dir(output_dir) / f"rows-{key[:16]}"
    if os.environ.get("LOCAL_RANK", "0") == "0" and not final.is_dir():
        train, val, lines = read_and_split(cfg)  # may raise: nothing is written before this returns
        _publish(final, lambda tmp: _write_rows(tmp, train, val, lines, key))
    wait_for(final, "the rows cache (local rank 0 failed to build it?)", wait_s)
    return final


def _write_rows(tmp: Path, train: list[Example], val: list[Example], lines: list[str], key: str) -> None:
    from datasets import Dataset

    for split, rows in zip(SPLITS, (train, val), strict=True):
        columns = {c: [getattr(e, c) for e in rows] for c in ROW_COLUMNS}
        Dataset.from_dict(columns).save_to_disk(str(tmp / split))
    atomic_write_json(tmp / "load_report.json", {"key": key, "lines": lines})


def load_rows(rows_dir: Path):
    """(train, validation) datasets, memory-mapped, and the report lines of the load that built them."""
    from datasets import load_from_disk

    report = json.loads((rows_dir / "load_report.json").read_text())
    return load_from_disk(str(rows_dir / "train")), load_from_disk(str(rows_dir / "validation")), report["lines"]


def examples(table) -> list[Example]:
    """Rows of a cached split as Examples (for small data only: the tiny model's tokenizer corpus)."""
    return [Example(**{c: row[c] for c in ROW_COLUMNS}) for row in table]


# ---- tokens: after the process group starts -------------------------------------------------------------------


def prepare_tokens(cfg: TrainConfig, output_dir: Path, rows_dir: Path, tokenizer, accelerator) -> tuple[Path, bool]:
    """The tokens cache directory (built by each node's main process first); and whether it was built now."""
    from train.data import tokenize_rows

    key = tokens_key(cfg, rows_dir.name, tokenizer)
    final = cache_dir(output_dir) / f"tokens-{key[:16]}"
    built = False
    with accelerator.local_main_process_first():
        if accelerator.is_local_main_process and not final.is_dir():
            train, val, _ = load_rows(rows_dir)
            d = cfg.data
            kwargs = dict(
                tokenizer=tokenizer, template=d.prompt_template, max_source=d.max_source_tokens,
                max_target=d.max_target_tokens,
            )  # fmt: skip

            def write(tmp: Path) -> None:
                for split, table in zip(SPLITS, (train, val), strict=True):
                    table.map(
                        tokenize_rows,
                        batched=True,
                        fn_kwargs=kwargs,
                        remove_columns=[c for c in ROW_COLUMNS if c != "study_id"],
                        cache_file_name=str(tmp / f"{split}.arrow"),
                        new_fingerprint=f"{key[:16]}-{split}",
                        desc=f"tokenising {split}",
                    )
                atomic_write_json(tmp / "key.json", {"key": key, **asdict(cfg.data)})

            _publish(final, write)
            built = True
    return final, built


def load_tokens(tokens_dir: Path):
    """(train, validation) tokenised datasets, memory-mapped."""
    from datasets import Dataset

    return tuple(Dataset.from_file(str(tokens_dir / f"{split}.arrow")) for split in SPLITS)


# ---- publishing a directory --------------------------------------------------------------------------------------


def _publish(final: Path, write) -> None:
    """Write into a private temporary directory, then rename it into place; a copy that lost the race (a shared
    disk, another node) is dropped, as the two are built from the same inputs."""
    tmp = final.with_name(f".{final.name}.{socket.gethostname()}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def wait_for(path: Path, what: str, timeout_s: float) -> None:
    """Wait for a directory another process publishes (before any process group exists to wait on)."""
    deadline = time.time() + timeout_s
    while not path.is_dir():
        if time.time() > deadline:
            raise RuntimeError(f"{path} did not appear: {what}")
        time.sleep(0.5)
