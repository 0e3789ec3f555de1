"""The dropin plugin module: what entry point `s3` in group "dropin" points at.

It declares `--s3_cache_dir`, registers the `s3` model source, and keeps a reference to the
backend registry (registering no backend) so that the source can ask the installed backends
whether a version's files are complete before downloading it. boto3 is imported only when an
`s3://` model is first listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from .cache import default_root
from .source import S3Source

if TYPE_CHECKING:
    from dropin.backend import Backend
    from dropin.registry import Registry
    from dropin.sources import ModelSource
    from dropin.vocabulary import Vocabulary

hookimpl = pluggy.HookimplMarker("dropin")


@hookimpl
def dropin_declare_vocabulary(vocabulary: Vocabulary) -> None:
    vocabulary.server_option(
        "s3_cache_dir", default=str(default_root()), metavar="DIR",
        help="where versions of s3:// models are downloaded; kept across restarts (default: under TMPDIR)",
    )


@hookimpl
def dropin_configure(options: Mapping[str, Any]) -> None:
    S3Source.cache_root = Path(options["s3_cache_dir"])


@hookimpl
def dropin_register_backends(registry: Registry[Backend]) -> None:
    # registers nothing: the registry is complete once every plugin's hook ran, before any
    # model is listed, and the source asks its backends to claim a version's file names
    S3Source.backends = registry


@hookimpl
def dropin_register_sources(registry: Registry[ModelSource]) -> None:
    registry.add("s3", S3Source)
