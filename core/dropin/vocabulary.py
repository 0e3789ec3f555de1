"""What plugins add to dropin's vocabulary: command-line flags, config.json model keys and errors.

Every plugin, first-party or not, declares them the same way, from its `dropin_declare_vocabulary`
hook, which the plugin host calls once at start-up, before the command line is parsed:

    @hookimpl
    def dropin_declare_vocabulary(vocabulary):
        vocabulary.model_key("color_format", check=check_color_format, flag=True, help="...")
        vocabulary.server_option("greeting", default="hello", help="...")
        vocabulary.error(IMAGE_PARSING_FAILED)

- A **model key** is accepted in config.json's model entries (an unknown key is a configuration
  error naming it). Its `check` validates a value when the configuration is read and returns the
  value kept in `ModelConfig.options` (what preprocessors receive); a ValueError refuses the
  configuration with the model and key named. With `flag=True` it is also a single-model flag
  `--<key>`, whose text `from_text` turns into the config value.
- A **server option** is a flag `--<name>` of `dropin serve`; its value (`from_text` of the
  text, else `default`) reaches the plugin through the `dropin_configure` hook.
- An **error** is an `ErrorStatus`: raised as `DropinError(status, details)` and answered
  exactly as the core's statuses.

Names are unique: a model key the core owns, or a name another plugin declared, refuses the
declaration with both owners named; a flag the core has is refused when the parser is built.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .config import ConfigError
from .errors import ErrorStatus, Status


def _keep(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class ModelKey:
    """A config.json model key a plugin reads (and, with `flag`, the single-model flag --name)."""

    name: str
    help: str = ""
    #: config value -> the value kept; raise ValueError saying what is wrong (the key is named for you)
    check: Callable[[Any], Any] = _keep
    flag: bool = False
    #: the flag's text -> a config value (then checked as config.json's); ValueError when it cannot
    from_text: Callable[[str], Any] = str
    metavar: str | None = None


@dataclass(frozen=True)
class ServerOption:
    """A server-wide flag `--name` of `dropin serve`, for the plugin that declared it."""

    name: str
    help: str = ""
    default: Any = None
    #: the flag's text -> the value the plugin receives; ValueError when it cannot
    from_text: Callable[[str], Any] = str
    metavar: str | None = None


class Vocabulary:
    """The model keys, server options and errors every plugin declared, with who declared each."""

    def __init__(self, core_model_keys: frozenset[str] = frozenset()) -> None:
        self._core_model_keys = core_model_keys
        self.model_keys: dict[str, ModelKey] = {}
        self.server_options: dict[str, ServerOption] = {}
        self.errors: dict[str, ErrorStatus] = {}
        self._owners: dict[tuple[str, str], str] = {}
        #: the plugin whose hook is running; set by the plugin host so declarations know their owner
        self.current_plugin: str = "?"

    # -- declaring (from the dropin_declare_vocabulary hook) ------------------------------------

    def model_key(
        self,
        name: str,
        *,
        help: str = "",
        check: Callable[[Any], Any] = _keep,
        flag: bool = False,
        from_text: Callable[[str], Any] = str,
        metavar: str | None = None,
    ) -> None:
        """Accept `name` in config.json model entries (and as `--name` for one model with `flag`)."""
        if name in self._core_model_keys:
            raise ValueError(f"model key {name!r} is the core's; a plugin may read it, not declare it")
        if flag:
            self._claim_flag(name)
        self._claim("model key", name)
        self.model_keys[name] = ModelKey(name, help, check, flag, from_text, metavar)

    def server_option(
        self,
        name: str,
        *,
        help: str = "",
        default: Any = None,
        from_text: Callable[[str], Any] = str,
        metavar: str | None = None,
    ) -> None:
        """Add the flag `--name` to `dropin serve`; `dropin_configure` receives its value."""
        self._claim_flag(name)
        self._claim("server option", name)
        self.server_options[name] = ServerOption(name, help, default, from_text, metavar)

    def error(self, status: ErrorStatus) -> None:
        """Declare an error the plugin raises (`DropinError(status, details)`)."""
        if not isinstance(status, ErrorStatus):
            raise TypeError(f"error must be a dropin.errors.ErrorStatus, got {status!r}")
        if status.name in Status.__members__:
            raise ValueError(f"error {status.name} is the core's; raise dropin.errors.Status.{status.name} instead")
        self._claim("error", status.name)
        self.errors[status.name] = status

    def _claim_flag(self, name: str) -> None:
        self._claim("flag", name)  # a flag of the core's own is refused when the parser is built

    def _claim(self, kind: str, name: str) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{kind} {name!r} must be an identifier (letters, digits and _)")
        owner = self._owners.get((kind, name))
        if owner is not None:
            by = f"by plugin {owner!r} and by plugin {self.current_plugin!r}"
            raise ValueError(f"{kind} {name!r} is declared twice: {by}")
        self._owners[(kind, name)] = self.current_plugin

    # -- reading ----------------------------------------------------------------------------------

    def owner(self, kind: str, name: str) -> str:
        """The plugin that declared `name` ("model key", "server option" or "error")."""
        return self._owners[(kind, name)]

    def declared_by(self, plugin: str) -> dict[str, list[str]]:
        """What `plugin` declared, as `dropin plugins` shows it."""
        shown: dict[str, list[str]] = {}
        for key in self.model_keys.values():
            if self.owner("model key", key.name) == plugin:
                shown.setdefault("model key", []).append(f"{key.name} (--{key.name})" if key.flag else key.name)
        for option in self.server_options.values():
            if self.owner("server option", option.name) == plugin:
                shown.setdefault("server option", []).append(f"--{option.name}")
        for status in self.errors.values():
            if self.owner("error", status.name) == plugin:
                shown.setdefault("error", []).append(f"{status.name} ({status.grpc_code.name}, {status.http_status})")
        return shown

    def flags(self) -> Iterator[ModelKey | ServerOption]:
        """The model keys with a flag, then the server options."""
        yield from (key for key in self.model_keys.values() if key.flag)
        yield from self.server_options.values()

    def server_values(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every server option's value: `given` (already converted), else its default."""
        return {name: given.get(name, option.default) for name, option in self.server_options.items()}

    # -- the command line (cli.py) ----------------------------------------------------------------

    def add_flags(self, server: argparse._ArgumentGroup, model: argparse._ArgumentGroup) -> None:
        """Add the declared flags: per-model ones to the single-model group, server options to the
        server's. Their text is converted by `model_flag_values` and `server_flag_values`, so
        that a bad value is a configuration error naming the flag, as the core's own flags are."""
        for item in self.flags():
            per_model = isinstance(item, ModelKey)
            owner = self.owner("model key" if per_model else "server option", item.name)
            group = model if per_model else server
            try:
                text = f"{item.help} (plugin {owner})".lstrip()
                group.add_argument(f"--{item.name}", metavar=item.metavar, help=text)
            except argparse.ArgumentError:  # the core's own flag: the core's meaning stays
                log = logging.getLogger("dropin.plugins")
                log.error("plugin %s declares --%s, a flag of the core's; ignored", owner, item.name)

    def model_flag_values(self, args: argparse.Namespace) -> dict[str, Any]:
        """The per-model flags given, as config values (checked with the model's config)."""
        return {
            key.name: _from_text(key.from_text, getattr(args, key.name), key.name)
            for key in self.model_keys.values()
            if key.flag and getattr(args, key.name, None) is not None
        }

    def server_flag_values(self, args: argparse.Namespace) -> dict[str, Any]:
        """The server options given, converted (the others keep their defaults)."""
        return {
            option.name: _from_text(option.from_text, getattr(args, option.name), option.name)
            for option in self.server_options.values()
            if getattr(args, option.name, None) is not None
        }


def _from_text(convert: Callable[[str], Any], text: str, flag: str) -> Any:
    try:
        return convert(text)
    except ValueError as exc:
        raise ConfigError(f"--{flag} {exc}") from None
    except Exception as exc:  # a bug in the plugin's conversion: refused all the same
        raise ConfigError(f"--{flag}: the plugin failed to read {text!r}: {type(exc).__name__}: {exc}") from None
