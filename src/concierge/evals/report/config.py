"""The report config: models and endpoints, the sections, and reading/validating the YAML file."""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

PRICES_PATH = Path(__file__).parent.parent / "api_prices.yaml"
HOURS_PER_MONTH = 730.0
RESAMPLES = 2000
MODES = ("guided", "agent")
EVALUATIONS = ("support", "commands", "shop", "recommender")
RECSYS_OFF_THE_SHELF = ("pop", "als")
RECSYS_IN_HOUSE = ("itemknn-seq", "sasrec")

# (done, total) within one step, and which step of how many: the CLI draws both.
Progress = Callable[[int, int, str, int, int], None]  # (step, steps, label, done, total)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ReportConfigError(ValueError):
    """A report config problem, as one line."""


# --------------------------------------------------------------------------- configuration


@dataclass
class Endpoint:
    """An OpenAI-compatible endpoint to evaluate beside the hub's aliases (e.g. a proprietary API)."""

    name: str
    base_url: str
    model: str
    api_key_env: str | None = None
    price: str | None = None  # row id in the price table; default: ``model``
    timeout: float = 120.0

    def alias_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"url": self.base_url, "served_name": self.model, "timeout": self.timeout}
        if self.api_key_env:
            spec["api_key_env"] = self.api_key_env
        return spec


@dataclass
class SupportConfig:
    enabled: bool = True
    domain: str = "retail"
    data_dir: Path | None = None  # folder with the domain's db.json (or its parent)
    tasks: Path | None = None  # default: <data_dir>/tasks_train.json, or homestay's own tasks
    modes: tuple[str, ...] = ("guided",)
    trials: int = 1
    limit: int | None = None
    max_turns: int = 20
    max_steps: int = 12


@dataclass
class CommandsConfig:
    enabled: bool = True
    examples: Path | None = None  # guided dataset (JSON lines); default: built from the support tasks
    domain: str | None = None  # flows the commands belong to; default: the support domain
    prompt: str = "guided"  # guided (production path) or compact (training prompt)
    limit: int | None = None
    seed: int = 0


@dataclass
class ShopConfig:
    enabled: bool = True
    requests: Path | None = None  # shop_requests.yaml format
    seed: int = 7  # demo store
    n_products: int = 800
    n_shoppers: int = 200
    query_model: str = "auto"
    limit: int | None = None


@dataclass
class RecsysConfig:
    enabled: bool = True
    data: Path | None = None  # folder with ratings.csv (or the file)
    off_the_shelf: tuple[str, ...] = RECSYS_OFF_THE_SHELF
    in_house: tuple[str, ...] = RECSYS_IN_HOUSE
    baseline: str = "als"
    sasrec_epochs: int = 30
    seed: int = 0


@dataclass
class CostConfig:
    hourly_usd: float = 0.10  # a 2-vCPU cloud VM, like the machine the shipped figures came from
    utilisation: float = 0.5
    marginal_usd_per_hour: float = 0.0
    hours_per_month: float = HOURS_PER_MONTH
    prices: Path | None = None  # default: the packaged api_prices.yaml
    mode: str | None = None  # support mode whose conversations are priced (default: guided if run)


@dataclass
class ReportConfig:
    """What to evaluate, on which models, and at what hardware price (see the module docstring)."""

    models: list[str | Endpoint] = field(default_factory=lambda: ["support-agent", "retail-inhouse"])
    baseline: str | None = None  # default: the first model
    candidate: str | None = None  # default: the first in-house alias that is not the baseline
    limit: int | None = None  # tasks per evaluation, where a section sets none
    support: SupportConfig = field(default_factory=SupportConfig)
    commands: CommandsConfig = field(default_factory=CommandsConfig)
    shop: ShopConfig = field(default_factory=ShopConfig)
    recsys: RecsysConfig = field(default_factory=RecsysConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    resamples: int = RESAMPLES
    seed: int = 0

    @property
    def model_names(self) -> list[str]:
        return [m.name if isinstance(m, Endpoint) else m for m in self.models]

    @property
    def endpoints(self) -> list[Endpoint]:
        return [m for m in self.models if isinstance(m, Endpoint)]

    def baseline_name(self) -> str:
        return self.baseline or self.model_names[0]

    @classmethod
    def from_yaml(cls, path: str | Path) -> ReportConfig:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ReportConfigError(f"cannot read report config {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise ReportConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        return cls.from_dict(data or {}, base_dir=path.parent, origin=str(path))

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, base_dir: Path | None = None, origin: str = "report config"
    ) -> ReportConfig:
        """Validate a mapping (as in the YAML file); relative paths are relative to ``base_dir``."""
        reader = _Reader(origin, base_dir)
        if not isinstance(data, Mapping):
            raise ReportConfigError(f"{origin}: expected a mapping at the top level")
        top = reader.keys(data, "", set(_TOP_KEYS))
        config = cls()
        if "models" in top:
            config.models = reader.models(top["models"])
        for key in ("baseline", "candidate"):
            if top.get(key) is not None:
                setattr(config, key, reader.text(top[key], key))
        if top.get("limit") is not None:
            config.limit = reader.positive_int(top["limit"], "limit")
        if "resamples" in top:
            config.resamples = reader.positive_int(top["resamples"], "resamples")
        if "seed" in top:
            config.seed = reader.integer(top["seed"], "seed")
        for section, klass in _SECTIONS.items():
            if section in top:
                raw = top[section]
                if raw is False:
                    setattr(config, section, klass(enabled=False))
                    continue
                setattr(config, section, reader.section(raw or {}, section, klass))
        config.validate()
        return config

    def validate(self) -> None:
        """Cross-field checks (also run after the CLI applies its overrides)."""
        names = self.model_names
        if not names:
            raise ReportConfigError("models: give at least one model")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ReportConfigError(f"models: {dupes[0]!r} is listed twice")
        for name in names:
            if not _NAME_RE.match(name):
                raise ReportConfigError(f"models: {name!r} is not a valid model name")
        for key in ("baseline", "candidate"):
            value = getattr(self, key)
            if value is not None and value not in names:
                raise ReportConfigError(f"{key} {value!r} is not one of the models ({', '.join(names)})")
        if self.candidate is not None and self.candidate == self.baseline_name():
            raise ReportConfigError("candidate and baseline are the same model")
        s = self.support
        bad_modes = [m for m in s.modes if m not in MODES]
        if not s.modes or bad_modes:
            raise ReportConfigError(f"support.modes: choose from {', '.join(MODES)}, got {list(s.modes)}")
        if s.trials < 1:
            raise ReportConfigError("support.trials must be at least 1")
        for what, value in (
            ("limit", self.limit),
            ("support.limit", s.limit),
            ("commands.limit", self.commands.limit),
            ("shop.limit", self.shop.limit),
        ):
            if value is not None and value < 1:
                raise ReportConfigError(f"{what} must be at least 1")
        if self.commands.prompt not in ("guided", "compact"):
            raise ReportConfigError(
                f"commands.prompt must be guided or compact, not {self.commands.prompt!r}"
            )
        if self.shop.query_model not in ("always", "auto", "never"):
            raise ReportConfigError("shop.query_model must be always, auto or never")
        c = self.cost
        if not c.hourly_usd > 0:
            raise ReportConfigError(f"cost.hourly_usd must be above 0, got {c.hourly_usd}")
        if not 0 < c.utilisation <= 1:
            raise ReportConfigError(f"cost.utilisation must be in (0, 1], got {c.utilisation}")
        if c.marginal_usd_per_hour < 0 or c.hours_per_month <= 0:
            raise ReportConfigError("cost.marginal_usd_per_hour must be >= 0 and cost.hours_per_month > 0")
        if c.mode is not None and c.mode not in s.modes:
            raise ReportConfigError(f"cost.mode {c.mode!r} is not one of support.modes")
        from concierge.shop.recommend import model_names

        r = self.recsys
        for name in (*r.off_the_shelf, *r.in_house, r.baseline):
            if name not in model_names():
                raise ReportConfigError(f"recsys: unknown recommender {name!r} ({', '.join(model_names())})")
        if r.baseline not in r.off_the_shelf:
            raise ReportConfigError(f"recsys.baseline {r.baseline!r} must be one of recsys.off_the_shelf")
        if not r.in_house:
            raise ReportConfigError("recsys.in_house: give at least one recommender")
        if self.resamples < 100:
            raise ReportConfigError("resamples must be at least 100")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, for the report's ``meta``."""

        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, tuple | list):
                return [plain(v) for v in value]
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        out = plain(asdict(self))
        out["models"] = [asdict(m) if isinstance(m, Endpoint) else m for m in self.models]
        return out


_TOP_KEYS = (
    "models",
    "baseline",
    "candidate",
    "limit",
    "support",
    "commands",
    "shop",
    "recsys",
    "cost",
    "resamples",
    "seed",
)
_SECTIONS: dict[str, type] = {
    "support": SupportConfig,
    "commands": CommandsConfig,
    "shop": ShopConfig,
    "recsys": RecsysConfig,
    "cost": CostConfig,
}
_PATH_FIELDS = {"data_dir", "tasks", "examples", "requests", "data", "prices"}


class _Reader:
    """Typed reads with one-line errors naming the file and the key."""

    def __init__(self, origin: str, base_dir: Path | None) -> None:
        self.origin = origin
        self.base_dir = base_dir

    def fail(self, where: str, what: str) -> ReportConfigError:
        return ReportConfigError(f"{self.origin}: {where}: {what}")

    def keys(self, raw: Any, where: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(raw, Mapping):
            raise self.fail(where or "top level", "expected a mapping")
        for key in raw:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                raise self.fail(
                    f"{where}.{key}" if where else str(key),
                    "unknown setting" + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                )
        return dict(raw)

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"expected a non-empty string, got {value!r}")
        return value.strip()

    def integer(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"expected an integer, got {value!r}")
        return value

    def positive_int(self, value: Any, where: str) -> int:
        value = self.integer(value, where)
        if value < 1:
            raise self.fail(where, f"must be at least 1, got {value}")
        return value

    def number(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(where, f"expected a number, got {value!r}")
        return float(value)

    def path(self, value: Any, where: str) -> Path:
        path = Path(os.path.expandvars(os.path.expanduser(self.text(value, where))))
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        return path

    def models(self, raw: Any) -> list[str | Endpoint]:
        if isinstance(raw, str):
            raw = [m.strip() for m in raw.split(",") if m.strip()]
        if not isinstance(raw, list):
            raise self.fail("models", "expected a list of aliases or endpoints")
        out: list[str | Endpoint] = []
        for i, item in enumerate(raw):
            where = f"models[{i}]"
            if isinstance(item, str):
                out.append(self.text(item, where))
                continue
            entry = self.keys(item, where, {"name", "base_url", "model", "api_key_env", "price", "timeout"})
            for key in ("name", "base_url", "model"):
                if key not in entry:
                    raise self.fail(where, f"an endpoint needs {key}")
            url = self.text(entry["base_url"], f"{where}.base_url")
            if not url.startswith(("http://", "https://")):
                raise self.fail(f"{where}.base_url", f"must start with http:// or https://, got {url!r}")
            env = entry.get("api_key_env")
            if env is not None and not _ENV_RE.match(str(env)):
                raise self.fail(f"{where}.api_key_env", f"must be an environment variable name, got {env!r}")
            timeout = self.number(entry.get("timeout", 120.0), f"{where}.timeout")
            if timeout <= 0:
                raise self.fail(f"{where}.timeout", "must be above 0")
            out.append(
                Endpoint(
                    name=self.text(entry["name"], f"{where}.name"),
                    base_url=url.rstrip("/"),
                    model=self.text(entry["model"], f"{where}.model"),
                    api_key_env=str(env) if env else None,
                    price=self.text(entry["price"], f"{where}.price") if entry.get("price") else None,
                    timeout=timeout,
                )
            )
        return out

    def section(self, raw: Any, name: str, klass: type) -> Any:
        defaults = klass()
        allowed = set(asdict(defaults))
        entry = self.keys(raw, name, allowed)
        values: dict[str, Any] = {}
        for key, value in entry.items():
            where = f"{name}.{key}"
            default = getattr(defaults, key)
            if value is None:
                values[key] = None
            elif key in _PATH_FIELDS:
                values[key] = self.path(value, where)
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise self.fail(where, f"expected true or false, got {value!r}")
                values[key] = value
            elif isinstance(default, tuple):
                items = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
                if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
                    raise self.fail(where, "expected a list of names")
                values[key] = tuple(items)
            elif isinstance(default, float):
                values[key] = self.number(value, where)
            elif isinstance(default, int) or key == "limit":
                values[key] = self.integer(value, where)
            elif key == "mode":
                values[key] = self.text(value, where)
            else:
                values[key] = self.text(value, where)
        return klass(**{**asdict(defaults), **values})
