"""``edgeloop eval ...``: the detectors and the RUL model scored on public benchmarks (NAB, SKAB, C-MAPSS) and on
the simulator's ground truth, with :mod:`edgeloop.evaluation`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgeloop.cli.output import console, fail, out, print_json, progress_reporter
from edgeloop.cli.rul_model import RUL_CAP, RUL_RATE, RUL_STRIDE, RUL_TRAIN, RUL_TREES, rul_params

__all__ = ["DEFAULT_NAB_DETECTOR", "eval_app"]

eval_app = typer.Typer(no_args_is_help=True, help="Evaluate the detectors: public benchmarks (NAB, SKAB, C-MAPSS) "
                       "and the simulator's ground truth.")
DEFAULT_NAB_DETECTOR = "ensemble"  # the detector `eval nab` runs when neither --detector nor --scores is given


@eval_app.command("nab")
def eval_nab(
    detector: Annotated[str | None, typer.Option("--detector", help="Run this registered detector over every NAB "
                                                 "file in streaming order (default: "
                                                 f"{DEFAULT_NAB_DETECTOR}, with its univariate preset) and "
                                                 "optimise one threshold per profile, as NAB does.")] = None,
    scores: Annotated[Path | None, typer.Option("--scores", help="Instead of running a detector: a detector's "
                                                "scores in NAB's results layout, CATEGORY/[DETECTOR_]NAME.csv with "
                                                "timestamp and anomaly_score.")] = None,
    thresholds: Annotated[Path | None, typer.Option("--thresholds", help="With --scores: NAB's thresholds.json "
                                                    "(per detector and profile; the detector is the scores "
                                                    "directory's name). Without it the thresholds are optimised.")
                          ] = None,
    data: Annotated[Path | None, typer.Option("--data", help="The data directory holding nab/ (default: "
                                              "$EDGELOOP_DATA or ../shared/data beside the project).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Processes running files in parallel "
                                         "(0: one per CPU).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score a detector on NAB with our scorer: the three profiles, normalised 0 (null) to 100.

    With --detector (the default) the detector runs over the corpus (progress on stderr); with --scores,
    precomputed anomaly scores are read instead.
    """
    from edgeloop.evaluation.nab import PROFILES, score_corpus
    from edgeloop.evaluation.nab_data import (
        NabDataError,
        default_data_dir,
        load_corpus,
        load_profiles,
        load_scored_corpus,
        load_thresholds,
        nab_dir,
    )
    from edgeloop.evaluation.nab_run import UNIVARIATE_PARAMS, default_workers, optimise_thresholds, run_corpus

    if scores is not None and detector is not None:
        raise fail("give --detector or --scores, not both")
    if thresholds is not None and scores is None:
        raise fail("--thresholds goes with --scores (a detector's thresholds are optimised)")
    data_dir = data if data is not None else default_data_dir()
    if not data_dir.is_dir():
        raise fail(f"data directory {data_dir} not found: give --data DIR or set EDGELOOP_DATA")
    name = scores.name if scores is not None else (detector or DEFAULT_NAB_DETECTOR)
    started = time.perf_counter()
    try:
        nab = nab_dir(data_dir)
        profiles = load_profiles(nab)
        if scores is not None:
            files = load_scored_corpus(nab, scores)
        else:
            series = load_corpus(nab)
            tty = sys.stderr.isatty()

            def progress(done: int, total: int) -> None:
                if tty:
                    typer.echo(f"\r{name}: {done}/{total} files", err=True, nl=done == total)
                elif done == total or done % max(1, total // 10) == 0:  # a log gets about ten lines
                    typer.echo(f"{name}: {done}/{total} files", err=True)

            files = run_corpus(series, name, UNIVARIATE_PARAMS.get(name), workers=workers or default_workers(),
                               progress=progress)
        chosen = (load_thresholds(thresholds, name) if thresholds is not None
                  else optimise_thresholds(files, profiles))
        results = score_corpus(files, chosen, profiles)
    except (NabDataError, ValueError) as exc:
        raise fail(str(exc)) from None
    seconds = time.perf_counter() - started
    if as_json:
        report: dict[str, object] = {p: round(results[p].normalized, 4) for p in PROFILES}
        if thresholds is None:  # optimised thresholds are reported (published ones: the three scores, as before)
            report.update(detector=name, files=len(files), windows=sum(len(f.windows) for f in files),
                          thresholds={p: chosen[p] for p in PROFILES}, seconds=round(seconds, 2))
        print_json(report)
        return
    how = "published" if thresholds is not None else "optimised"
    table = Table(title=f"NAB: {name} on {len(files)} files, {sum(len(f.windows) for f in files)} windows "
                        f"({how} thresholds, {seconds:.1f} s)")
    for column in ("profile", "score", "threshold", "raw", "null", "perfect"):
        table.add_column(column, justify="left" if column == "profile" else "right")
    for p in PROFILES:
        r = results[p]
        table.add_row(p, f"{r.normalized:.2f}", f"{chosen[p]:.6g}", f"{r.raw:.3f}", f"{r.null:.1f}",
                      f"{r.perfect:.1f}")
    out.print(table)


@eval_app.command("skab")
def eval_skab(
    data: Annotated[Path | None, typer.Option("--data", help="A folder of SKAB-format runs (searched recursively; "
                                              "other CSVs are skipped and listed), or the data directory holding "
                                              "skab/ (default: $EDGELOOP_DATA or ../shared/data beside the "
                                              "project).")] = None,
    detector: Annotated[str, typer.Option("--detector", help="Registered detector scoring the features.")] = (
        "mahalanobis"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object: f1, far and mar (fractions "
                                          "0..1, the anomaly alarm), nab_standard, nab_low_fp, nab_low_fn (the "
                                          "change alarm; 0 = detect nothing, 100 = perfect), nab_anomaly_alarm "
                                          "(the same three for the anomaly alarm's switches), tp/fp/tn/fn, runs, "
                                          "windows, skipped, detector.")] = False,
) -> None:
    """Detect anomalies and changes on SKAB water-pump runs (first 400 rows of each run train, the rest is scored).

    Point F1, false-alarm rate (FAR) and missed-alarm rate (MAR; % in the table, fractions in JSON) of the anomaly
    alarm over all test rows, and SKAB's NAB score on change points (30 s windows centred on each labelled change
    point) of the change alarm's switches -- and, for comparison, of the anomaly alarm's switches.
    """
    from edgeloop.detect.registry import available
    from edgeloop.evaluation.nab_data import default_data_dir
    from edgeloop.evaluation.skab import SkabConfig, evaluate
    from edgeloop.evaluation.skab_data import SkabDataError, load_runs, skab_dir

    if detector not in available():
        raise fail(f"unknown detector {detector!r}; available: {', '.join(available())}")
    try:
        folder = skab_dir(data if data is not None else default_data_dir())
        runs, skipped = load_runs(folder)
    except SkabDataError as exc:
        raise fail(str(exc)) from None
    for s in skipped:
        console.print(f"[yellow]skipped[/yellow] {s.name}: {s.reason}", highlight=False)
    started = time.monotonic()
    done = {"n": 0}

    def progress(name: str) -> None:
        done["n"] += 1
        console.print(f"[dim]{done['n']}/{len(runs)} {name}[/dim]", highlight=False)

    try:
        report = evaluate(runs, SkabConfig(detector=detector), progress=None if as_json else progress)
    except ValueError as exc:
        raise fail(str(exc)) from None
    c = report.counts
    profiles = (("standard", "standard"), ("low_fp", "reward_low_FP_rate"), ("low_fn", "reward_low_FN_rate"))
    nab = {f"nab_{key}": report.nab_score(profile) for key, profile in profiles}
    nab_alarm = {key: report.nab_score(profile, "anomaly") for key, profile in profiles}
    if as_json:
        print_json({"f1": round(c.f1, 4), "far": round(c.far, 4), "mar": round(c.mar, 4),
                             **{k: round(v, 2) for k, v in nab.items()},
                             "nab_anomaly_alarm": {k: round(v, 2) for k, v in nab_alarm.items()},
                             "tp": c.tp, "fp": c.fp, "tn": c.tn, "fn": c.fn, "runs": report.runs,
                             "windows": report.windows, "skipped": len(skipped), "detector": detector})
        return
    table = Table(title=f"SKAB: {detector} on {report.runs} runs in {folder} ({time.monotonic() - started:.1f} s)")
    for column in ("metric", "value", "published best"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    table.add_row("F1 (points)", f"{c.f1:.3f}", "0.78 (Conv-AE)")
    table.add_row("FAR", f"{100 * c.far:.1f} %", "13.6 %")
    table.add_row("MAR", f"{100 * c.mar:.1f} %", "28.0 %")
    table.add_row("NAB standard (change alarm)", f"{nab['nab_standard']:.1f}", "32.4 (MSCRED)")
    table.add_row("NAB low FP (change alarm)", f"{nab['nab_low_fp']:.1f}", "")
    table.add_row("NAB low FN (change alarm)", f"{nab['nab_low_fn']:.1f}", "")
    table.add_row("NAB std / low FP / low FN (anomaly alarm's switches)",
                  f"{nab_alarm['standard']:.1f} / {nab_alarm['low_fp']:.1f} / {nab_alarm['low_fn']:.1f}", "")
    out.print(table)
    out.print(f"test points: TP {c.tp}, FP {c.fp}, TN {c.tn}, FN {c.fn}; change-point windows: {report.windows}",
              highlight=False)


@eval_app.command("sim")
def eval_sim(
    devices: Annotated[int, typer.Option(min=1, help="Simulated machines.")] = 60,
    faulty: Annotated[int | None, typer.Option(min=0, help="How many of them get a fault (default: a third; "
                                               "the six fault types in turn).")] = None,
    sim_hours: Annotated[float, typer.Option(min=0.5, help="Simulated hours per machine.")] = 48.0,
    seed: Annotated[int, typer.Option(help="Fleet seed: the same seed gives the same fleet and faults.")] = 7,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Run the platform's detector over a simulated fleet and score it against the simulator's ground truth."""
    from edgeloop.evaluation.sim_eval import evaluate, run_fleet
    from edgeloop.sim import Fleet

    n_faulty = faulty if faulty is not None else devices // 3
    if n_faulty > devices:
        raise fail(f"--faulty {n_faulty} is more than --devices {devices}")
    fleet = Fleet(devices=devices, faulty=n_faulty, seed=seed, start_ms=1_767_225_600_000,
                  duration_ms=int(sim_hours * 3_600_000))
    started = time.monotonic()
    with progress_reporter() as progress:
        result = evaluate(run_fleet(fleet, step_ms=600_000, progress=lambda done, total: progress(
            "scoring", done / total, {"sim_hours": round(done / 3_600_000, 1)})))
    wall = round(time.monotonic() - started, 1)
    if as_json:
        print_json({**result.as_dict(), "seed": seed, "sim_hours": sim_hours, "wall_seconds": wall})
        return
    table = Table(title=f"{devices} machines ({n_faulty} faulty), {sim_hours:g} simulated hours, seed {seed}: "
                        f"{result.machine_days:.0f} machine-days in {wall} s")
    for column in ("fault", "machines", "detected", "recall", "median delay (min)"):
        table.add_column(column, justify="left" if column == "fault" else "right")
    for kind, r in sorted(result.per_fault.items()):
        table.add_row(kind, str(r.faulty), str(r.detected), f"{r.recall:.0%}",
                      "-" if r.median_delay_min is None else f"{r.median_delay_min:.1f}")
    table.add_row("all", str(result.faulty), str(result.detected), f"{result.recall:.0%}",
                  "-" if result.median_delay_min is None else f"{result.median_delay_min:.1f}")
    out.print(table)
    out.print(f"false alerts: {result.false_alerts} "
              f"({result.false_alerts_per_100_machine_days:.2f} per 100 machine-days)")
    for line in result.false_alert_detail[:20]:
        out.print(f"  {line}", highlight=False)


@eval_app.command("rul")
def eval_rul(
    train: Annotated[Path, RUL_TRAIN],
    test: Annotated[Path | None, typer.Option("--test", help="Truncated test engines (test_FD001.txt); needs "
                                              "--truth.")] = None,
    truth: Annotated[Path | None, typer.Option("--truth", help="True RUL at each test engine's last cycle, one "
                                               "per line (RUL_FD001.txt).")] = None,
    folds: Annotated[int, typer.Option("--folds", min=2, help="Without --test: cross-validation folds (by "
                                       "engine).")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the validation engines' cut points.")] = 0,
    trees: Annotated[int | None, RUL_TREES] = None,
    stride: Annotated[int | None, RUL_STRIDE] = None,
    cap: Annotated[float, RUL_CAP] = 125.0,
    rate: Annotated[float | None, RUL_RATE] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The RUL model at each engine's last observed cycle: RMSE, PHM08 score and interval coverage.

    Only --train: cross-validation by engine, each validation engine cut at a random cycle.
    With --test and --truth: train on --train, score the test engines at their last cycle."""
    from edgeloop.evaluation.cmapss_data import CmapssDataError, load_runs, load_test
    from edgeloop.evaluation.rul_eval import cross_validate, evaluate_test

    if (test is None) != (truth is None):
        raise fail("give both --test and --truth, or neither (cross-validation)")
    params = rul_params(trees, stride, cap, rate)
    started = time.monotonic()

    def progress(message: str) -> None:
        console.print(f"[{time.monotonic() - started:6.1f} s] {message}", highlight=False)

    try:
        engines = load_runs(train)
        if test is not None and truth is not None:
            test_engines, lives = load_test(test, truth)
            result = evaluate_test(engines, test_engines, lives, params, progress=progress)
        else:
            result = cross_validate(engines, folds, params, seed=seed, progress=progress)
    except (CmapssDataError, ValueError) as exc:
        raise fail(str(exc)) from None
    doc = result.to_json()
    if as_json:
        print_json(doc)
        return
    what = (f"{folds}-fold cross-validation by engine on {train.name}, cut at random cycles (seed {seed})"
            if test is None else f"trained on {train.name}, tested on {test.name}")
    table = Table(title=f"RUL: {what}; {doc['engines']} engines, cap {cap:g}")
    for column in ("figure", "value"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    table.add_row("RMSE at the last observed cycle", f"{doc['rmse']:.2f}")
    table.add_row("PHM08 score", f"{doc['phm08']:.1f}")
    table.add_row(f"interval coverage (nominal {params.coverage:.0%})", f"{doc['coverage']:.1%}")
    table.add_row("RMSE against the uncapped truth", f"{doc['rmse_uncapped']:.2f}")
    if doc["rows_rmse"] is not None:
        table.add_row("RMSE over every cycle", f"{doc['rows_rmse']:.2f}")
        table.add_row("interval coverage over every cycle", f"{doc['rows_coverage']:.1%}")
    table.add_row("seconds", f"{doc['seconds']:.0f}")
    out.print(table)




@eval_app.command("loop")
def eval_loop(
    seed: Annotated[int, typer.Option(help="Fleet seed: the regime change, the faults and the technicians.")] = 1,
    devices: Annotated[int, typer.Option(min=5, max=500, help="Simulated machines.")] = 20,
    changed: Annotated[float, typer.Option(min=0.05, max=0.95, help="Share of the fleet that changes regime.")] = 0.4,
    shadow_h: Annotated[float, typer.Option("--shadow-hours", min=0.25, help="A candidate's shadow phase.")] = 2.0,
    soak_h: Annotated[float, typer.Option("--soak-hours", min=0.25, help="Each canary wave's soak.")] = 2.0,
    edge_gateways: Annotated[int, typer.Option("--edge-gateways", min=0, max=10,
                                               help="Real agents for the edge story, in real time: 0 skips it, "
                                                    "else at least 2 (a wave and its control).")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The closed learning loop end to end on a simulated fleet through the real platform: a benign regime change,
    drift, retraining on technicians' verdicts, a gated rollout to promotion; then a bad candidate that must be
    rolled back and a tampered artifact that must be refused; then real edge agents get a good and a bad edge model
    version through gated campaigns (see docs/models.md)."""
    import asyncio

    from edgeloop.evaluation.loop import LoopConfig, run_loop

    if edge_gateways == 1:
        raise typer.BadParameter("0 (no edge story) or at least 2: a wave and its control",
                                 param_hint="--edge-gateways")
    cfg = LoopConfig(seed=seed, devices=devices, changed_fraction=changed, shadow_h=shadow_h, soak_h=soak_h,
                     edge_gateways=edge_gateways)
    with progress_reporter() as progress:
        result = asyncio.run(run_loop(cfg, progress=progress))
    if as_json:
        print_json(result)
        return
    table = Table(title=f"the learning loop: {devices} machines ({result['changed_devices']} change regime), "
                        f"seed {seed}, {result['wall_seconds']} s")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in ("drift_detected_min", "false_alarms_per_100_machine_days_before",
                "false_alarms_per_100_machine_days_after", "fault_recall_after", "promoted", "promotion_hours",
                "bad_candidate_max_share", "bad_candidate_rolled_back", "rollback_min",
                "missed_faults_during_rollout", "tampered_artifact_refused", "lineage_complete", "edge_gateways",
                "edge_promoted", "edge_promotion_s", "edge_bad_max_share", "edge_bad_rolled_back", "edge_rollback_s"):
        if key in result:
            table.add_row(key, str(result[key]))
    out.print(table)


@eval_app.command("actions")
def eval_actions(
    seed: Annotated[int, typer.Option(help="Which press plays which part, the temperatures, the approvers.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Closed-loop actions end to end through the real platform, a real agent and three Modbus PLCs: policies,
    interlocks, approvals by one and two people (approve, reject, never answer), a hold, a gateway offline past a
    command's lifetime, duplicated deliveries, a command outside the gateway's envelope; measured against the
    PLCs' own write logs (see docs/actions.md). About a minute, in real time."""
    import asyncio

    from edgeloop.evaluation.actions_story import ActionsConfig, run_actions

    with progress_reporter() as progress:
        result = asyncio.run(run_actions(ActionsConfig(seed=seed), progress=progress))
    if as_json:
        print_json(result)
        return
    table = Table(title=f"closed-loop actions, seed {seed}, {result['wall_seconds']} s")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in ("commands_sent", "commands_applied", "plc_writes", "unsafe_executed", "duplicate_executed",
                "records_complete", "chain_verified", "p50_decision_to_applied_ms", "p99_decision_to_applied_ms"):
        table.add_row(key, str(result[key]))
    out.print(table)
    cases = Table(title="cases")
    for col in ("case", "press", "must write", "decisions", "answers", "PLC writes of its value"):
        cases.add_column(col)
    for c in result["cases"]:
        cases.add_row(c["case"], c["press"], "yes" if c["must_write"] else "no", ", ".join(c["decisions"]),
                      ", ".join(c["answers"]) or "-", str(c["plc_writes_of_its_value"]))
    out.print(cases)
