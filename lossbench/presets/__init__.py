"""Study presets shipped with the package: `lossbench study --preset NAME` reads `NAME.toml` here.

Each file has the layout of a study file (`lossbench.study.definition`); options given beside
`--preset` override it, as they override `--config`.
"""

from __future__ import annotations

from importlib import resources

from lossbench.errors import ConfigError


def available_presets() -> list[str]:
    """The names of the shipped presets."""
    return sorted(
        p.name.removesuffix(".toml") for p in resources.files(__name__).iterdir() if p.name.endswith(".toml")
    )


def preset_text(name: str) -> str:
    """The TOML text of preset `name`; ConfigError naming the presets when unknown."""
    if name not in available_presets():
        raise ConfigError(f"unknown preset {name!r} (choose from {', '.join(available_presets())})")
    return resources.files(__name__).joinpath(f"{name}.toml").read_text(encoding="utf-8")
