"""The sidecar's YAML config file: label prefix, defaults, extra jobs, limits, ports and folders.

Keys are written like the labels (kebab-case). Every key is optional; a
missing file means all defaults. Unknown keys are errors, so a typo is not
silently ignored. Every key, commented: examples/sidecar/config/sidecar.yaml.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta, tzinfo
from pathlib import Path
from typing import Any

import yaml

from compose_ckpt.domain.store import safefs
from compose_ckpt.domain.store.retention import parse_duration
from compose_ckpt.errors import UsageError
from compose_ckpt.sidecar.policy import (
    DEFAULT_PREFIX,
    JOB_FIELDS,
    RESTORE_ON_BOOT,
    BootMode,
    JobSettings,
    LabelRules,
    SettingError,
    parse_boot_mode,
    validate_job_name,
)

ENV_CONFIG = "COMPOSE_CKPT_SIDECAR_CONFIG"
DEFAULT_CONFIG = Path("/etc/compose-ckpt/sidecar.yaml")
LABEL_PREFIX = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
TOP_KEYS = ("label-prefix", "concurrency", "resync-interval", "run-timeout", "http-port", "trigger-dir", "defaults", "jobs")


@dataclass(frozen=True)
class SidecarConfig:
    label_prefix: str = DEFAULT_PREFIX
    concurrency: int = 2  # snapshot runs at once, over all projects
    resync_interval: timedelta = timedelta(seconds=60)  # full re-read of labelled containers
    run_timeout: timedelta = timedelta(minutes=10)  # a longer run is reported failed (it is not interrupted)
    http_port: int = 9321  # /healthz and /metrics; 0: no HTTP server
    trigger_dir: Path = Path("/run/compose-ckpt/trigger")
    defaults: JobSettings = field(default_factory=JobSettings)
    restore_on_boot: BootMode = BootMode.OFF
    jobs: Mapping[str, JobSettings] = field(default_factory=dict)

    def rules(self, zone: tzinfo) -> LabelRules:
        return LabelRules(prefix=self.label_prefix, zone=zone, defaults=self.defaults,
                          restore_on_boot=self.restore_on_boot, jobs=self.jobs)


def config_path(given: str | None = None) -> Path:
    return Path(given or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG)


MAX_CONFIG_BYTES = 1024**2


def load_config(path: Path, zone: tzinfo) -> SidecarConfig:
    """Read and validate the file; any problem is a UsageError naming the file and the key."""
    try:
        # Whoever can change it chooses what is snapshotted and restored: root's (or ours), writable by its owner only.
        if not safefs.trusted_chain(path.parent, create=False):
            return SidecarConfig()
        text = safefs.read_trusted_file(path, MAX_CONFIG_BYTES).decode()
    except FileNotFoundError:
        return SidecarConfig()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the sidecar config {path}: {exc}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: invalid YAML: {exc}") from None
    try:
        return _parse(document if document is not None else {}, zone)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc.message}", hint=exc.hint) from None


def _parse(document: Any, zone: tzinfo) -> SidecarConfig:
    top = _mapping(document, "the config", TOP_KEYS)
    prefix = str(top.get("label-prefix", DEFAULT_PREFIX))
    if not LABEL_PREFIX.match(prefix):
        raise UsageError(f"label-prefix: invalid label prefix {prefix!r}")
    defaults = _mapping(top.get("defaults", {}), "defaults", (*JOB_FIELDS, RESTORE_ON_BOOT))
    try:
        restore_on_boot = parse_boot_mode(defaults.pop(RESTORE_ON_BOOT, False))
    except UsageError as exc:
        raise SettingError(f"defaults.{RESTORE_ON_BOOT}", exc) from None
    jobs = {
        validate_job_name(str(name)): _settings(settings, f"jobs.{name}", zone)
        for name, settings in _mapping(top.get("jobs", {}), "jobs", None).items()
    }
    missing = [name for name, settings in jobs.items() if settings.schedule is None]
    if missing:
        raise UsageError(f"jobs.{missing[0]}: a job needs a schedule")
    return SidecarConfig(
        label_prefix=prefix,
        concurrency=_number(top, "concurrency", 2, minimum=1),
        resync_interval=_duration(top, "resync-interval", timedelta(seconds=60)),
        run_timeout=_duration(top, "run-timeout", timedelta(minutes=10)),
        http_port=_number(top, "http-port", 9321, minimum=0, maximum=65535),
        trigger_dir=Path(str(top.get("trigger-dir", SidecarConfig.trigger_dir))),
        defaults=_settings(defaults, "defaults", zone),
        restore_on_boot=restore_on_boot,
        jobs=jobs,
    )


def _mapping(value: Any, where: str, allowed: tuple[str, ...] | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be a mapping")
    unknown = [str(key) for key in value if allowed is not None and key not in allowed]
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(allowed or ())})")
    return dict(value)


def _settings(value: Any, where: str, zone: tzinfo) -> JobSettings:
    try:
        return JobSettings.parse(_mapping(value, where, JOB_FIELDS), zone)
    except SettingError as exc:
        raise UsageError(f"{where}.{exc.message}", hint=exc.hint) from None


def _number(top: Mapping[str, Any], key: str, default: int, minimum: int, maximum: int = 1_000_000) -> int:
    value = top.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise UsageError(f"{key}: expected a whole number from {minimum} to {maximum}, not {value!r}")
    return value


def _duration(top: Mapping[str, Any], key: str, default: timedelta) -> timedelta:
    if key not in top:
        return default
    try:
        value = parse_duration(str(top[key]))
    except UsageError as exc:
        raise SettingError(key, exc) from None
    if value.total_seconds() < 1:
        raise UsageError(f"{key}: must be at least 1s")
    return value
