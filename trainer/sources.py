"""Documents from one data source, streamed: a hub dataset, local json/jsonl/parquet/text
files, or the offline python_stdlib corpus.

Hub and local files go through the same call, ``datasets.load_dataset(..., streaming=True)``,
so nothing is downloaded or held in memory up front. A ``SourceStream`` yields document texts
and can save and restore its position (``state_dict``/``load_state_dict``), which is how an
interrupted data build resumes without re-reading what it already wrote.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, Iterator

from runcontract.config import SourceConfig
from runcontract.errors import UserError
from trainer.stdlib_corpus import iter_stdlib_documents

HUB_CHECK_TIMEOUT_S = 10.0  # the hub answers in well under a second; no answer means no network
MIRROR_HINT = (
    "With no network, use local files instead (a source with type: json, parquet or text and "
    "path: a file, glob or comma-separated list), the offline corpus (type: python_stdlib, as in "
    "configs/data_offline.yaml), or a reachable mirror of the hub (set the HF_ENDPOINT environment variable)."
)


def describe(source: SourceConfig) -> str:
    where = source.path or "the installed standard library"
    extra = f", config {source.config}" if source.config else ""
    return f"source '{source.name}' ({source.type}: {where}{extra})"


def _quiet_datasets() -> None:
    """datasets' own progress bars and warnings would drown ours."""
    import datasets

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def _check_hub_reachable(source: SourceConfig) -> None:
    """Ask the hub about the dataset once, with a short timeout, before ``load_dataset`` (which
    retries for tens of seconds): no network or an unknown id fails here, in seconds."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, OfflineModeIsEnabled, RepositoryNotFoundError

    try:
        HfApi().dataset_info(source.path, timeout=HUB_CHECK_TIMEOUT_S)
    except GatedRepoError:
        raise UserError(
            f"{describe(source)} is gated: accept its terms on the hub's web page and log in "
            "(huggingface-cli login or the HF_TOKEN environment variable), then run again."
        ) from None
    except RepositoryNotFoundError:
        raise UserError(
            f"{describe(source)}: no such dataset on the hub (or it is private). Check the path "
            "in the data config (for example allenai/c4 or wikimedia/wikipedia)."
        ) from None
    except OfflineModeIsEnabled:
        raise UserError(f"{describe(source)} needs the hub, but HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set. {MIRROR_HINT}") from None
    except Exception as exc:  # connection refused, DNS failure, timeout, proxy errors...
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UserError(f"{describe(source)} could not reach the dataset hub ({reason}). {MIRROR_HINT}") from None


def expand_data_files(source: SourceConfig) -> list[str]:
    """A path, a glob or a comma-separated list of them -> the sorted list of existing files."""
    files: list[str] = []
    for pattern in (p.strip() for p in (source.path or "").split(",")):
        if not pattern:
            continue
        matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        matches = [m for m in matches if Path(m).is_file()]
        if not matches:
            raise UserError(
                f"{describe(source)}: no file matches '{pattern}'. Check the path in the data config "
                "(relative paths are from the folder you run in)."
            )
        files.extend(matches)
    return files


def _load_streaming(source: SourceConfig):
    import datasets

    _quiet_datasets()
    if source.type == "hub":
        _check_hub_reachable(source)
        args: tuple = (source.path, source.config)
        kwargs: dict[str, Any] = {}
    else:
        files = expand_data_files(source)
        args = (source.type,)
        # the split name is ours to choose for local files: keep the config's
        kwargs = {"data_files": {source.split: files}}
        if source.type == "text":
            kwargs["sample_by"] = "paragraph"  # a blank line ends a document (a line would be too small)
    try:
        return datasets.load_dataset(*args, split=source.split, streaming=True, **kwargs)
    except UserError:
        raise
    except Exception as exc:
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise UserError(
            f"{describe(source)} could not be opened: {reason}. Check its path, config and split "
            f"in the data config. {MIRROR_HINT if source.type == 'hub' else ''}".strip()
        ) from None


class SourceStream:
    """Iterate the texts of one source; ``state_dict()`` is the position after the last text."""

    def __init__(self, source: SourceConfig):
        self.source = source
        self.consumed = 0  # documents (records) taken so far, empty ones included
        self._dataset = None if source.type == "python_stdlib" else _load_streaming(source)

    def __iter__(self) -> Iterator[str]:
        if self._dataset is None:
            for text in iter_stdlib_documents(start=self.consumed):
                self.consumed += 1
                yield text
            return
        try:
            for record in self._dataset:
                text = self._text_of(record)
                self.consumed += 1
                yield text
        except UserError:
            raise
        except Exception as exc:
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            hint = MIRROR_HINT if self.source.type == "hub" else "Check that the files are valid " + self.source.type + "."
            raise UserError(f"{describe(self.source)} failed while reading record {self.consumed}: {reason}. {hint}") from None

    def _text_of(self, record: dict) -> str:
        field = self.source.text_field
        if field not in record:
            raise UserError(
                f"{describe(self.source)} has no field '{field}' (its records have: "
                f"{', '.join(sorted(record)) or 'no fields'}). Set text_field in the data config to the field holding the text."
            )
        value = record[field]
        if value is None:
            return ""
        if not isinstance(value, str):
            raise UserError(
                f"{describe(self.source)}: field '{field}' holds {type(value).__name__}, not text. "
                "Set text_field in the data config to a field holding strings."
            )
        return value

    def state_dict(self) -> dict:
        state: dict[str, Any] = {"consumed": self.consumed}
        if self._dataset is not None:
            state["datasets"] = self._dataset.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.consumed = int(state["consumed"])
        if self._dataset is not None:
            self._dataset.load_state_dict(state["datasets"])


def open_source(source: SourceConfig) -> SourceStream:
    return SourceStream(source)

