"""``concierge report``: the proof report (held-out evaluations, relative improvement, cost) as JSON + HTML."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

DEFAULT_MODELS = "support-agent,retail-inhouse"
SECTIONS = ("support", "commands", "shop", "recommender")


def _fail(message: str) -> NoReturn:
    print(message.splitlines()[0] if message else "error", file=sys.stderr)
    raise typer.Exit(2)


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def shared_data_root(data_dir: Path | None) -> Path | None:
    """``--data-dir``, else ``$CONCIERGE_SHARED_DATA``, else ``../shared/data`` (from here or the checkout)."""
    if data_dir is not None:
        return data_dir.expanduser()
    env = os.environ.get("CONCIERGE_SHARED_DATA")
    candidates = [Path(env).expanduser()] if env else []
    candidates += [Path.cwd().parent / "shared" / "data", _repo_root().parent / "shared" / "data"]
    return next((c for c in candidates if c.is_dir()), None)


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _apply_options(config: Any, root: Path | None, **opts: Any) -> Any:
    """Command-line options over the config file (only those given), data folders filled in."""
    from concierge.evals.report import ReportConfig

    if opts["models"] is not None:
        names = _csv(opts["models"])
        if not names:
            _fail("error: --models needs at least one alias")
        kept = {m.name: m for m in config.endpoints}
        config.models = [kept.get(n, n) for n in names]
        if config.baseline is not None and config.baseline not in names:
            config.baseline = None
        if config.candidate is not None and config.candidate not in names:
            config.candidate = None
    for key in ("baseline", "candidate", "limit"):
        if opts[key] is not None:
            setattr(config, key, opts[key])
    if opts["trials"] is not None:
        config.support = replace(config.support, trials=opts["trials"])
    if opts["modes"] is not None:
        config.support = replace(config.support, modes=tuple(_csv(opts["modes"])))
    if opts["domain"] is not None:
        config.support = replace(config.support, domain=opts["domain"])
    cost = {k: opts[k] for k in ("hourly_usd", "utilisation") if opts[k] is not None}
    if cost:
        config.cost = replace(config.cost, **cost)
    if opts["recsys_in_house"] is not None:
        config.recsys = replace(config.recsys, in_house=tuple(_csv(opts["recsys_in_house"])))
    for name in _csv(opts["skip"]):
        if name not in SECTIONS:
            _fail(f"error: --skip takes {', '.join(SECTIONS)}, not {name!r}")
        attr = "recsys" if name == "recommender" else name
        setattr(config, attr, replace(getattr(config, attr), enabled=False))
    # Data folders: the shared data root holds tau2/<domain>/ and movielens-latest-small/.
    if root is not None:
        if config.support.data_dir is None and config.support.domain != "homestay":
            tau2 = root / "tau2"
            config.support = replace(config.support, data_dir=tau2 if tau2.is_dir() else root)
        if config.recsys.data is None:
            movielens = root / "movielens-latest-small"
            if movielens.is_dir():
                config.recsys = replace(config.recsys, data=movielens)
            elif (root / "ratings.csv").is_file():
                config.recsys = replace(config.recsys, data=root)
    if config.shop.requests is None:
        from concierge.shop.demo_store import DEMO_REQUESTS  # written requests, shipped with the package

        config.shop = replace(config.shop, requests=DEMO_REQUESTS)
    assert isinstance(config, ReportConfig)
    return config


def report(
    json_out: Annotated[Path, typer.Option("--json", help="write the JSON summary here")],
    html_out: Annotated[Path, typer.Option("--html", help="write the HTML report (with plots) here")],
    config_file: Annotated[
        Path | None, typer.Option("--config", help="report config (YAML); options below override it")
    ] = None,
    models: Annotated[
        str | None,
        typer.Option("--models", help=f"comma list of model aliases (default {DEFAULT_MODELS})"),
    ] = None,
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="model the others are compared with (default: the first)")
    ] = None,
    candidate: Annotated[
        str | None,
        typer.Option("--candidate", help="model whose relative improvement is reported (default: in-house)"),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="shared data folder holding tau2/ and movielens-latest-small/ (default ../shared/data)",
        ),
    ] = None,
    domain: Annotated[str | None, typer.Option("--domain", help="support domain (default retail)")] = None,
    modes: Annotated[
        str | None,
        typer.Option("--modes", help="support modes, comma list of guided, agent (default guided)"),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="tasks per evaluation (first N), for quick runs")
    ] = None,
    trials: Annotated[int | None, typer.Option("--trials", help="support trials per task (pass^k)")] = None,
    hourly_usd: Annotated[
        float | None, typer.Option("--hourly-usd", help="hardware price, US$ per hour (default 0.10)")
    ] = None,
    utilisation: Annotated[
        float | None, typer.Option("--utilisation", help="share of paid hours doing work, 0-1 (default 0.5)")
    ] = None,
    skip: Annotated[
        str | None, typer.Option("--skip", help=f"leave evaluations out: comma list of {', '.join(SECTIONS)}")
    ] = None,
    recsys_in_house: Annotated[
        str | None,
        typer.Option("--recsys-in-house", help="in-house recommenders to try (default itemknn-seq,sasrec)"),
    ] = None,
) -> None:
    """Evaluate the off-the-shelf and in-house models on the same held-out tasks; write JSON and HTML."""
    from concierge import config as app_config
    from concierge.evals.report import ReportConfig, ReportConfigError, run_report, write_html, write_json
    from concierge.models.deployment import DeploymentError
    from concierge.models.engine import ModelError
    from concierge.models.hub import ModelHub

    if json_out.resolve() == html_out.resolve():
        _fail("error: --json and --html must be different files")
    for out in (json_out, html_out):
        if out.exists() and out.is_dir():
            _fail(f"error: {out} is a folder, not a file")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _fail(f"error: cannot create {out.parent}: {exc.strerror or exc}")
    if data_dir is not None and not data_dir.is_dir():
        _fail(f"error: --data-dir {data_dir} is not a folder")
    for name, value in (("--limit", limit), ("--trials", trials)):
        if value is not None and value < 1:
            _fail(f"error: {name} must be at least 1")
    if config_file is not None and not config_file.is_file():
        _fail(f"error: report config not found: {config_file}")
    try:
        cfg = ReportConfig.from_yaml(config_file) if config_file else ReportConfig()
        if config_file is None and models is None:
            models = DEFAULT_MODELS
        cfg = _apply_options(
            cfg,
            shared_data_root(data_dir),
            models=models,
            baseline=baseline,
            candidate=candidate,
            limit=limit,
            trials=trials,
            modes=modes,
            domain=domain,
            hourly_usd=hourly_usd,
            utilisation=utilisation,
            skip=skip,
            recsys_in_house=recsys_in_house,
        )
        cfg.validate()
        if cfg.support.enabled:
            from concierge.evals.report import resolve_support_inputs
            from concierge.support.domains import load_domain

            folder, _ = resolve_support_inputs(cfg.support)
            load_domain(cfg.support.domain, folder)
    except (ReportConfigError, ValueError, FileNotFoundError, OSError) as exc:
        message = str(exc)
        _fail(message if message.startswith("error") else f"error: {message}")

    console = Console(stderr=True)
    hub = None
    try:
        hub = ModelHub.from_config(app_config.deployment_path())
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=console, transient=True) as bars:
            overall = bars.add_task("evaluations", total=None)
            current = bars.add_task("starting", total=None)

            started: set[int] = set()

            def progress(step: int, steps: int, label: str, done: int, total: int) -> None:
                if step not in started and not console.is_terminal:
                    # No live bar in a log file: one line per evaluation instead.
                    started.add(step)
                    console.print(f"[{step + 1}/{steps}] {label}", highlight=False)
                bars.update(overall, total=steps, completed=step)
                bars.update(current, description=label, total=max(total, 1), completed=done)

            summary = run_report(cfg, hub, progress=progress)
    except (ReportConfigError, ModelError, DeploymentError, ValueError, OSError) as exc:
        _fail(f"error: {getattr(exc, 'message', None) or exc}")
    finally:
        if hub is not None:
            hub.close()
    try:
        write_json(summary, json_out)
        write_html(summary, html_out)
    except OSError as exc:
        _fail(f"error: cannot write the report: {exc}")
    _print_summary(summary)
    print(f"wrote {json_out} and {html_out}")


def _print_summary(summary: dict[str, Any]) -> None:
    for name, metrics in summary["models"].items():
        shown = ", ".join(f"{m} {v:.3f}" for m, v in metrics.items())
        print(f"{name}: {shown or 'no metrics'}")
    for metric, r in summary["relative_improvement"].items():
        if r.get("value") is None:
            print(f"{metric}: relative improvement undefined ({r.get('reason')})")
        else:
            lo, hi = r["ci95"] or (float("nan"), float("nan"))
            print(
                f"{metric}: {r['candidate']} vs {r['baseline']} {100 * r['value']:+.1f}% "
                f"(95% CI {100 * lo:+.1f}% .. {100 * hi:+.1f}%, n={r['n']})"
            )
    for name, c in summary["cost"].items():
        per_m, per_conv = c.get("usd_per_1m_output_tokens"), c.get("usd_per_resolved_conversation")
        if per_m is None:
            print(f"cost {name}: {c.get('reason')}")
            continue
        tps = c.get("tokens_per_second")
        print(
            f"cost {name}: ${per_m:.4g} per 1M output tokens"
            + (f" ({tps:.1f} tokens/s)" if tps else "")
            + (
                f", ${per_conv:.4g} per resolved conversation"
                if per_conv is not None
                else f" ({c.get('reason')})"
            )
        )
    for name, reason in summary["skipped"].items():
        print(f"skipped {name}: {reason}")
