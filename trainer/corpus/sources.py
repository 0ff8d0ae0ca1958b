"""Documents from one data source, streamed: a hub dataset, local json/jsonl/parquet/text
files, or the offline python_stdlib corpus.

Hub and local files go through the same call, ``datasets.load_dataset(..., streaming=True)``,
so nothing is downloaded or held in memory up front. A ``SourceStream`` yields document texts
and can save and restore its position (``state_dict``/``load_state_dict``), which is how an
interrupted data build resumes without re-reading what it already wrote.

A hub source's failures are told apart (``hub_failure``): offline mode, the hub unreachable,
429/5xx (tried again after each of ``HUB_RETRY_DELAYS_S``, on opening and mid-stream from the
record after the last one read, then ``HubUnavailable``), gated without a usable HF_TOKEN
(401/403), no such dataset (404), no such config (naming the dataset's configs).
"""
from __future__ import annotations

import glob
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from runcontract.config import SourceConfig
from runcontract.errors import UserError
from trainer.corpus.stdlib_corpus import iter_stdlib_documents

HUB_CHECK_TIMEOUT_S = 10.0  # the hub answers in well under a second; no answer means no network
# Waits between our tries when the hub answers 429 or 5xx (after huggingface_hub's own ~23 s of
# retries on file requests): about two minutes more. Tests pass their own.
HUB_RETRY_DELAYS_S = (5.0, 15.0, 30.0, 60.0)
MIRROR_HINT = (
    "With no network, use local files instead (a source with type: json, parquet or text and "
    "path: a file, glob or comma-separated list), the offline corpus (type: python_stdlib, as in "
    "configs/data_offline.yaml), or a reachable mirror of the hub (set the HF_ENDPOINT environment variable)."
)
TOKEN_HINT = (
    "Create a read token on the hub (Settings > Access Tokens), accept the dataset's terms on its page if it "
    "is gated, and export HF_TOKEN=... in the shell you run in (launcher run hands it to the box as a secret)."
)


class HubUnavailable(UserError):
    """The hub kept answering 429 (rate limit) or 5xx past every retry: worth running again later."""


def describe(source: SourceConfig) -> str:
    where = source.path or "the installed standard library"
    extra = f", config {source.config}" if source.config else ""
    return f"source '{source.name}' ({source.type}: {where}{extra})"


def _quiet_datasets() -> None:
    """datasets' own progress bars and warnings would drown ours."""
    import datasets

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from (datasets wraps the client's errors)."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain and len(chain) < 10:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _status(exc: BaseException) -> Optional[int]:
    for cause in _causes(exc):
        code = getattr(getattr(cause, "response", None), "status_code", None)
        if isinstance(code, int):
            return code
    return None


def _is_transient(exc: BaseException) -> bool:
    """429 / 408 / 5xx, or a connection that dropped or stalled after it was made."""
    status = _status(exc)
    if status is not None:
        return status in (408, 429) or status >= 500
    names = {cls.__name__ for cause in _causes(exc) for cls in type(cause).__mro__}
    return bool(names & {"ReadTimeout", "ReadError", "RemoteProtocolError", "WriteError", "ChunkedEncodingError"})


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def _valid_configs(source: SourceConfig, exc: BaseException) -> Optional[list[str]]:
    """The dataset's config names, from datasets' own message or by asking the hub."""
    found = re.search(r"(?:Available|available configs): \[([^\]]*)\]", str(exc))
    if found:
        return [name.strip().strip("'\"") for name in found.group(1).split(",") if name.strip()]
    try:
        import datasets

        return list(datasets.get_dataset_config_names(source.path))
    except Exception:
        return None


def hub_failure(source: SourceConfig, exc: BaseException, tries: int = 1) -> UserError:
    """One clear paragraph for what went wrong between us and the hub, by kind: offline mode,
    unreachable, rate-limited or failing (429/5xx), no token or no access (401/403), no such
    dataset (404), no such config; anything else quoted."""
    from huggingface_hub.errors import GatedRepoError, OfflineModeIsEnabled, RepositoryNotFoundError

    causes = _causes(exc)
    names = {cls.__name__ for cause in causes for cls in type(cause).__mro__}
    status = _status(exc)
    endpoint = hub_endpoint()
    what = describe(source)
    if any(isinstance(c, OfflineModeIsEnabled) for c in causes) or "OfflineModeIsEnabled" in names:
        return UserError(f"{what} needs the hub, but HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set. {MIRROR_HINT}")
    if _is_transient(exc):
        said = f"answered {status}" + (" (rate limit: too many requests)" if status == 429 else "") if status else \
            f"dropped the connection ({_first_line(exc)})"
        token = "" if os.environ.get("HF_TOKEN") or status != 429 else (
            " Anonymous requests have a low rate limit: export HF_TOKEN (a read token) to raise it.")
        return HubUnavailable(f"{what}: the hub at {endpoint} {said}, {tries} time(s) with retries in between.{token} "
                              "Run it again later.")
    if any(isinstance(c, GatedRepoError) for c in causes) or status == 403 or "gated dataset" in str(exc):
        token = "the token in HF_TOKEN has no access to it" if os.environ.get("HF_TOKEN") else "no HF_TOKEN is set"
        return UserError(f"{what} is gated on the hub ({endpoint} answered {status or 'gated'}) and {token}. {TOKEN_HINT}")
    if any(isinstance(c, RepositoryNotFoundError) for c in causes) or status in (401, 404) or "DatasetNotFoundError" in names:
        anonymous = "" if os.environ.get("HF_TOKEN") else (
            " If it is private or gated, the hub hides it from anonymous requests: export HF_TOKEN (a read token with access).")
        return UserError(f"{what}: the hub at {endpoint} has no dataset '{source.path}' ({status or 'not found'}). Check the path "
                         f"in the data config (for example allenai/c4 or wikimedia/wikipedia).{anonymous}")
    if isinstance(exc, ValueError) and ("BuilderConfig" in str(exc) or "Config name is missing" in str(exc)):
        configs = _valid_configs(source, exc)
        listed = f"its configs are: {', '.join(configs)}" if configs else "the hub did not list its configs"
        wrong = f"has no config '{source.config}'" if source.config else "needs a config"
        return UserError(f"{what}: the dataset {wrong}; {listed}. Set config in the data config to one of them.")
    if names & {"ConnectError", "ConnectTimeout", "ConnectionError", "gaierror", "TimeoutException", "ProxyError", "NetworkError"}:
        return UserError(f"{what}: cannot reach {endpoint} ({_first_line(exc)}). {MIRROR_HINT}")
    return UserError(f"{what} could not be opened: {_first_line(exc, 300)}. Check its path, config and split in the data "
                     f"config. {MIRROR_HINT}")


def with_hub_retries(source: SourceConfig, action: Callable[[], Any], delays: Sequence[float], on_retry=None) -> Any:
    """``action()``, tried again after each of ``delays`` while the hub answers 429/5xx; any
    other failure at once, as ``hub_failure``'s paragraph. ``on_retry`` runs before each new try."""
    for tries, delay in enumerate((*delays, None), start=1):
        try:
            return action()
        except UserError:
            raise
        except Exception as exc:
            if delay is None or not _is_transient(exc):
                raise hub_failure(source, exc, tries) from None
            status = _status(exc)
            print(f"{describe(source)}: the hub {'answered ' + str(status) if status else 'dropped the connection'}; "
                  f"trying again in {delay:g} s ({tries}/{len(delays)})", file=sys.stderr, flush=True)
            time.sleep(delay)
            if on_retry is not None:
                on_retry()


def _check_hub_reachable(source: SourceConfig) -> None:
    """Ask the hub about the dataset once, with a short timeout, before ``load_dataset`` (which
    retries for tens of seconds): no network or an unknown id fails here, in seconds."""
    from huggingface_hub import HfApi

    HfApi().dataset_info(source.path, timeout=HUB_CHECK_TIMEOUT_S)


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


def _load_streaming(source: SourceConfig, delays: Sequence[float] = HUB_RETRY_DELAYS_S):
    import datasets

    _quiet_datasets()
    if source.type == "hub":
        def open_hub():
            _check_hub_reachable(source)
            return datasets.load_dataset(source.path, source.config, split=source.split, streaming=True)

        return with_hub_retries(source, open_hub, delays)
    files = expand_data_files(source)
    # the split name is ours to choose for local files: keep the config's
    kwargs: dict[str, Any] = {"data_files": {source.split: files}}
    if source.type == "text":
        kwargs["sample_by"] = "paragraph"  # a blank line ends a document (a line would be too small)
    try:
        return datasets.load_dataset(source.type, split=source.split, streaming=True, **kwargs)
    except Exception as exc:
        raise UserError(f"{describe(source)} could not be opened: {_first_line(exc, 300)}. Check its path and split in the "
                        "data config.") from None


class SourceStream:
    """Iterate the texts of one source; ``state_dict()`` is the position after the last text."""

    def __init__(self, source: SourceConfig, retry_delays: Optional[Sequence[float]] = None):
        self.source = source
        self.retry_delays = HUB_RETRY_DELAYS_S if retry_delays is None else tuple(retry_delays)
        self.consumed = 0  # documents (records) taken so far, empty ones included
        self._dataset = None if source.type == "python_stdlib" else _load_streaming(source, self.retry_delays)

    def __iter__(self) -> Iterator[str]:
        if self._dataset is None:
            for text in iter_stdlib_documents(start=self.consumed):
                self.consumed += 1
                yield text
            return
        try:
            for record in self._records():
                text = self._text_of(record)
                self.consumed += 1
                yield text
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"{describe(self.source)} failed while reading record {self.consumed}: {_first_line(exc, 300)}. "
                            f"Check that the files are valid {self.source.type}.") from None

    def _records(self) -> Iterator[dict]:
        """The dataset's records. From the hub, a read refused (429/5xx) or dropped past the client's
        own retries is tried again from the record after the last one read, after each retry delay."""
        if self.source.type != "hub":
            yield from self._dataset
            return
        failures = 0
        while True:
            try:
                for record in self._dataset:
                    failures = 0
                    yield record
                return
            except Exception as exc:
                if not _is_transient(exc) or failures >= len(self.retry_delays):
                    raise hub_failure(self.source, exc, failures + 1) from None
                resume_at = self._dataset.state_dict()  # the position after the last record yielded
                delay = self.retry_delays[failures]
                failures += 1
                print(f"{describe(self.source)}: reading record {self.consumed}, the hub "
                      f"{'answered ' + str(_status(exc)) if _status(exc) else 'dropped the connection'}; trying again "
                      f"in {delay:g} s ({failures}/{len(self.retry_delays)})", file=sys.stderr, flush=True)
                time.sleep(delay)
                self._dataset.load_state_dict(resume_at)

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

