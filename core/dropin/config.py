"""Model configuration: OVMS's config.json format, single-model CLI flags, version policies."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backend import LoadOptions
from .errors import DropinError, Status

if TYPE_CHECKING:
    from .vocabulary import Vocabulary


class ConfigError(DropinError):
    def __init__(self, details: str) -> None:
        super().__init__(Status.CONFIG_INVALID, details)


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions on disk to serve: latest N (the default, N=1), all, or specific ones."""

    kind: str = "latest"  # "latest" | "all" | "specific"
    num_versions: int = 1
    versions: frozenset[int] = frozenset()

    def select(self, available: Iterable[int]) -> set[int]:
        present = set(available)
        if self.kind == "all":
            return present
        if self.kind == "specific":
            return present & self.versions
        return set(sorted(present)[-self.num_versions :])

    @classmethod
    def parse(cls, value: Any) -> VersionPolicy:
        """From OVMS's JSON form: {"latest":{"num_versions":2}}, {"all":{}}, {"specific":{"versions":[1,3]}}."""
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"model_version_policy is not valid JSON: {exc}") from None
        if not isinstance(value, dict) or len(value) != 1:
            raise ConfigError('model_version_policy must have exactly one key: "latest", "all" or "specific"')
        (kind, body), = value.items()
        if not isinstance(body, dict):
            raise ConfigError(f"model_version_policy.{kind} must be an object")
        if kind == "all":
            _only(body, set(), "model_version_policy.all")
            return cls("all")
        if kind == "latest":
            _only(body, {"num_versions"}, "model_version_policy.latest")
            n = body.get("num_versions", 1)
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ConfigError("model_version_policy.latest.num_versions must be an integer >= 1")
            return cls("latest", num_versions=n)
        if kind == "specific":
            _only(body, {"versions"}, "model_version_policy.specific")
            versions = body.get("versions")
            if (
                not isinstance(versions, list)
                or not versions
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in versions)
            ):
                raise ConfigError("model_version_policy.specific.versions must be a non-empty list of integers >= 1")
            return cls("specific", versions=frozenset(versions))
        raise ConfigError(f'unknown model_version_policy {kind!r}: expected "latest", "all" or "specific"')

    def __str__(self) -> str:
        if self.kind == "latest":
            return f"latest {self.num_versions}"
        if self.kind == "specific":
            return f"specific {sorted(self.versions)}"
        return "all"


@dataclass(frozen=True)
class DynamicBatching:
    """Server-side batching of concurrent requests (TF Serving's BatchingParameters names):
    requests are queued until their summed batch reaches `max_batch_size` or the first of them
    has waited `batch_timeout_micros`, then run as one inference (see batching.py)."""

    max_batch_size: int
    batch_timeout_micros: int

    #: the largest batch_timeout_micros accepted: a longer wait is a mistake, not a tuning
    MAX_TIMEOUT_MICROS = 10_000_000

    @classmethod
    def parse(cls, value: Any, where: str = "dynamic_batching") -> DynamicBatching | None:
        """From {"max_batch_size": 16, "batch_timeout_micros": 500} (or its JSON text); None
        (batching off) for None or an empty string."""
        if value is None or value == "" or isinstance(value, cls):
            return value or None
        value = _from_json(value, where)
        if not isinstance(value, dict):
            raise ConfigError(f'{where} must be an object: {{"max_batch_size": 16, "batch_timeout_micros": 500}}')
        _only(value, {"max_batch_size", "batch_timeout_micros"}, where)
        missing = [k for k in ("max_batch_size", "batch_timeout_micros") if k not in value]
        if missing:
            raise ConfigError(f"{where} needs {' and '.join(missing)}")
        size, timeout = value["max_batch_size"], value["batch_timeout_micros"]
        if not _is_int(size) or size < 2:
            raise ConfigError(f"{where}.max_batch_size must be an integer >= 2 (1 would never batch), got {size!r}")
        if not _is_int(timeout) or not 0 <= timeout <= cls.MAX_TIMEOUT_MICROS:
            raise ConfigError(
                f"{where}.batch_timeout_micros must be an integer from 0 to {cls.MAX_TIMEOUT_MICROS}, got {timeout!r}"
            )
        return cls(size, timeout)

    def __str__(self) -> str:
        return f"max_batch_size {self.max_batch_size}, batch_timeout_micros {self.batch_timeout_micros}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ModelConfig:
    """One served model."""

    name: str
    base_path: str
    version_policy: VersionPolicy = VersionPolicy()
    load: LoadOptions = LoadOptions()
    backend: str | None = None  # None: the first backend that claims the version directory
    #: every other option of the entry (color_format, mean, scale, ...), for preprocessors
    options: Mapping[str, Any] = field(default_factory=dict)
    dynamic_batching: DynamicBatching | None = None  # None: every request runs on its own


# The model keys the core reads: OVMS's that it implements, plus dropin's "backend" and
# "dynamic_batching". Plugins read them too (options), but cannot declare them.
CORE_MODEL_KEYS = frozenset({
    "name", "base_path", "batch_size", "model_version_policy", "shape", "layout", "nireq",
    "target_device", "plugin_config", "backend", "dynamic_batching",
})
# OVMS's other model keys (its config schema). A config.json OVMS accepts stays valid here: these
# are accepted with or without a plugin that declares them (the image plugin declares mean, scale
# and color_format, and then checks their values). Without one, a key has no effect and the log
# says so once per model (config_schema.report_unsupported). allow_cache reaches the backend
# (LoadOptions.options["allow_cache"]).
OVMS_MODEL_KEYS = frozenset({
    "stateful", "low_latency_transformation", "idle_sequence_cleanup", "max_sequence_number",
    "allow_cache", "cache_dir", "mean", "scale", "color_format", "precision", "custom_loader_options",
})


def _only(body: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)}")


def parse_plugin_config(value: Any, where: str = "plugin_config") -> dict[str, Any]:
    if value is None or value == "":
        return {}
    value = _from_json(value, where)
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a JSON object")
    return dict(value)


def _from_json(value: Any, where: str) -> Any:
    """A CLI flag's JSON text decoded (config.json values are already decoded)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where} is not valid JSON: {exc}") from None


def model_config(
    entry: Mapping[str, Any], relative_to: Path | None = None, vocabulary: Vocabulary | None = None
) -> ModelConfig:
    """A ModelConfig from one `model_config_list[].config` object (or the equivalent CLI flags).
    Keys beyond the core's and OVMS's are those plugins declared in `vocabulary`, each value
    checked by its plugin."""
    declared = vocabulary.model_keys if vocabulary is not None else {}
    _only(entry, {*CORE_MODEL_KEYS, *OVMS_MODEL_KEYS, *declared}, f"model {entry.get('name', '?')!r}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError("every model needs a non-empty string 'name'")
    base_path = entry.get("base_path")
    if not isinstance(base_path, str) or not base_path:
        raise ConfigError(f"model {name!r} needs a 'base_path'")
    if ".." in Path(base_path).parts:
        raise ConfigError(f"model {name!r}: base_path may not contain '..'")
    if "://" not in base_path and relative_to is not None and not os.path.isabs(base_path):
        base_path = str((relative_to / base_path).resolve())
    policy = entry.get("model_version_policy")
    nireq = entry.get("nireq", 0) or 0
    if not isinstance(nireq, int) or nireq < 0:
        raise ConfigError(f"model {name!r}: nireq must be an integer >= 0")
    device = entry.get("target_device", "CPU") or "CPU"
    load = LoadOptions(
        target_device=str(device),
        plugin_config=parse_plugin_config(entry.get("plugin_config"), f"model {name!r} plugin_config"),
        nireq=nireq,
        shape=entry.get("shape"),
        layout=entry.get("layout"),
        batch_size=entry.get("batch_size"),
    )
    allow_cache = entry.get("allow_cache")
    if allow_cache is not None and not isinstance(allow_cache, bool):
        raise ConfigError(f"model {name!r}: allow_cache must be true or false, got {allow_cache!r}")
    if allow_cache is not None:
        load = dataclasses.replace(load, options={"allow_cache": allow_cache})
    batching = DynamicBatching.parse(entry.get("dynamic_batching"), f"model {name!r} dynamic_batching")
    options = {
        k: v
        for k, v in entry.items()
        if k not in {"name", "base_path", "model_version_policy", "backend", "dynamic_batching"}
    }
    for key in sorted(set(options) & set(declared)):
        try:
            options[key] = declared[key].check(options[key])
        except ValueError as exc:
            raise ConfigError(f"model {name!r}: {key}: {exc}") from None
        except Exception as exc:  # a bug in the plugin's check: the configuration is refused all the same
            assert vocabulary is not None
            owner = vocabulary.owner("model key", key)
            why = f"{type(exc).__name__}: {exc}"
            raise ConfigError(f"model {name!r}: {key}: plugin {owner} failed to check it: {why}") from None
    return ModelConfig(
        name=name,
        base_path=base_path,
        version_policy=VersionPolicy.parse(policy) if policy is not None else VersionPolicy(),
        load=load,
        backend=entry.get("backend"),
        options=options,
        dynamic_batching=batching,
    )


def read_config_file(path: str | Path, vocabulary: Vocabulary | None = None) -> list[ModelConfig]:
    """Parse an OVMS config.json. Raises ConfigError, applying nothing, when the file is invalid."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_config(data, path, vocabulary)


def parse_config(data: bytes, path: Path, vocabulary: Vocabulary | None = None) -> list[ModelConfig]:
    """The models of config.json contents `data` read from `path` (base paths are relative to it),
    with the model keys plugins declared in `vocabulary`."""
    try:
        document = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or "model_config_list" not in document:
        raise ConfigError(f"{path}: the top level must be an object with 'model_config_list'")
    from .config_schema import check_document, report_unsupported  # it imports this module

    check_document(document, str(path))
    entries = document["model_config_list"]
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: model_config_list must be a list")
    models: list[ModelConfig] = []
    for item in entries:
        if not isinstance(item, dict) or set(item) != {"config"} or not isinstance(item["config"], dict):
            raise ConfigError(f'{path}: every model_config_list item must be {{"config": {{...}}}}')
        models.append(model_config(item["config"], relative_to=path.parent.resolve(), vocabulary=vocabulary))
        report_unsupported(models[-1].name, item["config"], vocabulary.model_keys if vocabulary else ())
    names = [m.name for m in models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{path}: duplicate model name(s) {', '.join(duplicates)}")
    from .pipelines.config import parse_pipelines

    shared = sorted(set(names) & {p.name for p in parse_pipelines(document, str(path)).pipelines})
    if shared:
        raise ConfigError(f"{path}: pipeline(s) {', '.join(shared)}: a model has that name (names are shared)")
    return models


def read_metrics_config(path: str | Path) -> tuple[bool, list[str]]:
    """config.json's `monitoring.metrics`: (enable, metrics_list), as OVMS reads them."""
    try:
        document = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return False, []  # read_config_file reports unreadable and invalid files
    metrics = document.get("monitoring", {}).get("metrics", {}) if isinstance(document, dict) else {}
    if not isinstance(metrics, dict):
        raise ConfigError(f"{path}: monitoring.metrics must be an object")
    _only(metrics, {"enable", "metrics_list"}, f"{path}: monitoring.metrics")
    enable, names = metrics.get("enable", False), metrics.get("metrics_list", [])
    if not isinstance(enable, bool) or not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: monitoring.metrics needs a boolean 'enable' and a list of names 'metrics_list'")
    return enable, names


# -- HandleReloadConfigRequest: which base paths a client may name ---------------------------------


def reload_roots(text: str, flag: str = "--reload_config_roots") -> tuple[Path, ...]:
    """The comma-separated directories of `flag`, each resolved (symlinks, `..`); ConfigError
    unless each exists and is a directory."""
    roots = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        root = Path(os.path.realpath(item))
        if not root.is_dir():
            raise ConfigError(f"{flag}: {item!r} is not a directory")
        roots.append(root)
    if not roots:
        raise ConfigError(f"{flag} needs at least one directory")
    return tuple(roots)


def base_path_inside(name: str, base_path: str, roots: Iterable[Path]) -> str:
    """A client's base path, resolved (symlinks and `..`; relative to the working directory)
    before it is compared, if it lies inside one of `roots`; ConfigError naming it otherwise.
    The resolved path is what gets served, so a symlink changed later cannot move it out."""
    roots = tuple(roots)
    allowed = ", ".join(map(str, roots))
    if not base_path or "://" in base_path:
        raise ConfigError(
            f"model {name!r}: base_path {base_path!r} is not a directory inside --reload_config_roots ({allowed})"
        )
    resolved = Path(os.path.realpath(base_path))
    if not any(resolved.is_relative_to(root) for root in roots):
        shown = base_path if str(resolved) == base_path else f"{base_path} (resolved: {resolved})"
        raise ConfigError(f"model {name!r}: base_path {shown} is outside --reload_config_roots ({allowed})")
    return str(resolved)
