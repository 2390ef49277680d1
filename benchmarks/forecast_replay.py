"""Project recorded runs again with the forecaster of this tree, on exactly the input they gave theirs.

Run:  python benchmarks/forecast_accuracy.py --record DIR          # records each run's forecaster input
      python benchmarks/forecast_replay.py DIR [DIR ...] [--against REV]
                                  # replays them with this tree's forecaster (and the one at git REV)
      python benchmarks/forecast_replay.py DIR [DIR ...] --level-after
                                  # how much the steps after the first log past 10% cost against
                                  # the level the forecaster projected there, per run

Each record (``DIR/<run>.json``) holds what a benchmark run's forecaster was given, in order (its
training windows and evaluation passes), what each forecast it made was asked with (the windows seen,
the run's measured totals, the plan), which of them the framework logged at which step, and the
run's measured total. Replaying feeds the same windows to a fresh ``Forecaster`` and asks it at
the same moments, so the logged stream can be scored for a changed forecaster without training
again: the host's noise is the same for both, which side-by-side benchmark runs minutes apart on a
shared machine cannot give. It prints, per run and pooled, the scores of issue 13 (every forecast
logged from 5% of the plan on: its error against the measured total and whether its 90% interval
held it; the first logged past 10%; the worst logged past 10%; the median width of those
intervals), for the forecasts as recorded, as this tree's forecaster makes them and, with
``--against``, as the forecaster at another revision does, with the largest difference from the
recorded forecasts (zero when the forecaster did not change).

It measures a forecaster on the runs recorded, not on new ones: a rule tuned until these records
pass has learned this host's noise on these runs. Use it to see what a change does, then run the
benchmark again.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import types
from pathlib import Path

from wattwise.forecast import Forecast, Forecaster


def logged_stream_score(points: list[tuple[int, float, float, float]], blank: list[int], total_j: float,
                        planned: int) -> dict:
    """The logged stream's scores for one run: ``points`` are (step, J, low J, high J) as logged,
    ``blank`` the steps of training logs that carried no forecast."""
    past5 = [p for p in points if p[0] >= 0.05 * planned]
    past10 = [p for p in points if p[0] > 0.10 * planned]
    blank10 = [step for step in blank if step > 0.10 * planned]
    errors10 = [100.0 * (j - total_j) / total_j for _, j, _, _ in past10] if total_j > 0 else []
    return {
        "n": len(past5),
        "held": sum(low <= total_j <= high for _, _, low, high in past5),
        "first10": errors10[0] if errors10 else None,
        "first10_step": past10[0][0] if past10 else None,
        "worst10": max(errors10, key=abs) if errors10 else None,
        "width": statistics.median([(high - low) / total_j for _, _, low, high in past5]) if past5 else None,
        "logs10": len(past10) + len(blank10),  # training logs past 10% of the plan
        "shown10": len(past10),  # those that showed a forecast
    }


def feed(forecaster: Forecaster, events: list[list]) -> None:
    """Give ``forecaster`` recorded events, in order: ["window", steps, J, s, work] or ["eval", J, s]."""
    for event in events:
        if event[0] == "window":
            forecaster.add_window(*event[1:])
        else:
            forecaster.add_eval_pass(*event[1:])


def replay(record: dict, forecaster_class: type = Forecaster) -> list[Forecast | None]:
    """Every forecast the recorded run asked for, made again by ``forecaster_class``."""
    events, asked = record["events"], record["asked"]
    forecaster = forecaster_class(asked[0]["planned_steps"] if asked else None)
    fed, made = 0, []
    for ask in asked:
        feed(forecaster, events[fed:ask["events"]])
        fed = ask["events"]
        forecaster.planned_steps, forecaster.eval_every_steps = ask["planned_steps"], ask["eval_every_steps"]
        made.append(forecaster.forecast(ask["energy_so_far_j"], ask["duration_so_far_s"]))
    return made


def recorded_points(record: dict) -> tuple[list[tuple[int, float, float, float]], list[int]]:
    """The logged stream as the run logged it: (step, J, low J, high J), and the steps of the
    training logs without a forecast (records made before those were kept have none)."""
    points = [(step, kwh * 3.6e6, low * 3.6e6, high * 3.6e6) for _, step, kwh, low, high in record["logged"]
              if kwh is not None]
    return points, [step for _, step, kwh, *_ in record["logged"] if kwh is None]


def replayed_points(record: dict, forecaster_class: type = Forecaster) -> tuple[list[tuple], list[int]]:
    """The logged stream as ``forecaster_class`` would have made it at the same training logs."""
    made = replay(record, forecaster_class)
    points = [(step, made[index].energy_j, made[index].energy_low_j, made[index].energy_high_j)
              for index, step, *_ in record["logged"] if made[index] is not None]
    return points, [step for index, step, *_ in record["logged"] if made[index] is None]


def largest_difference(a: list[tuple], b: list[tuple]) -> float:
    """The largest relative difference between two logged streams' values (inf if their steps differ)."""
    if [p[0] for p in a] != [p[0] for p in b]:
        return math.inf
    return max((abs(x - y) / abs(x) for p, q in zip(a, b, strict=True) for x, y in zip(p[1:], q[1:], strict=True)
                if x), default=0.0)


def forecaster_at(revision: str) -> type:
    """The ``Forecaster`` of ``core/forecast.py`` at a git revision of this repository (it imports
    only the standard library, so it loads on its own)."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "show", f"{revision}:core/forecast.py"], cwd=root, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType(f"forecast_at_{revision}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{revision}:core/forecast.py", "exec"), module.__dict__)
    return module.Forecaster


def level_after(record: dict) -> tuple[float, float] | None:
    """At the first training log past 10% of the plan: the training steps still to come's joules
    per step, and their evaluation passes' joules per pass, each against what the forecaster took
    them to be there (its recent-half rate; the mean of the passes so far), as ratios; None when
    it made no forecast there. Whether an error there is the forecaster's or the run's."""
    planned, events, asked = record["planned_steps"], record["events"], record["asked"]
    index = next((i for i, step, *_ in record["logged"] if step > 0.10 * planned), None)
    if index is None:
        return None
    ask = asked[index]
    forecaster = Forecaster(ask["planned_steps"], eval_every_steps=ask["eval_every_steps"])
    feed(forecaster, events[:ask["events"]])
    found = forecaster._steady()
    if found is None:
        return None
    later = events[ask["events"]:]
    steps = sum(e[1] for e in later if e[0] == "window")
    joules = sum(e[2] for e in later if e[0] == "window")
    passes = [e[1] for e in later if e[0] != "window"]
    done = [j for _, j, _ in forecaster._eval_passes]
    per_pass = statistics.fmean(passes) / statistics.fmean(done) if passes and done else math.nan
    return (joules / steps / found[2][0] if steps else math.nan), per_pass


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="directories written by forecast_accuracy.py --record")
    parser.add_argument("--against", metavar="REV", help="also replay with the forecaster at this git revision")
    parser.add_argument("--level-after", action="store_true",
                        help="per run: the later steps' and passes' cost against the level projected at 10%%")
    cli = parser.parse_args()
    paths = sorted(p for d in cli.dirs for p in Path(d).glob("*.json"))
    if not paths:
        sys.exit(f"no records (*.json) in {', '.join(cli.dirs)}")
    if cli.level_after:
        by_run: dict[str, list[str]] = {}
        for path in paths:
            record = json.loads(path.read_text())
            ratios = level_after(record)
            cells = ["-" if ratios is None or math.isnan(r) else pct(100 * (r - 1)) for r in (ratios or (math.nan,) * 2)]
            by_run.setdefault(record["name"], []).append(" / ".join(cells))
        print("| run | later steps' J/step / later passes' J per pass, against the level at the first log past 10%, "
              "per record |\n|---|---|")
        for name, cells in sorted(by_run.items()):
            print(f"| {name} | {'; '.join(cells)} |")
        return
    which = {"recorded": None, "this tree": Forecaster}
    if cli.against:
        which[cli.against] = forecaster_at(cli.against)
    head = ["record", "forecaster", "logged past 5%", "intervals holding the total", "first past 10%",
            "worst past 10%", "median interval width", "logs past 10% with a forecast",
            "largest difference from recorded"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    pooled: dict[str, list[dict]] = {name: [] for name in which}
    for path in paths:
        record = json.loads(path.read_text())
        total, planned = record["energy_j"], record["planned_steps"]
        logged, logged_blank = recorded_points(record)
        for name, forecaster_class in which.items():
            points, blank = (logged, logged_blank) if forecaster_class is None else replayed_points(
                record, forecaster_class)
            s = logged_stream_score(points, blank, total, planned)
            pooled[name].append(s)
            width = "-" if s["width"] is None else f"{100 * s['width']:.1f}%"
            print(f"| {path.parent.name}/{record['name']} | {name} | {s['n']} | {s['held']}/{s['n']} | "
                  f"{pct(s['first10'])} | {pct(s['worst10'])} | {width} | {s['shown10']}/{s['logs10']} | "
                  f"{largest_difference(logged, points):.1e} |")
    print()
    for name, scores in pooled.items():
        firsts = [abs(s["first10"]) for s in scores if s["first10"] is not None]
        worst = [abs(s["worst10"]) for s in scores if s["worst10"] is not None]
        held, n = sum(s["held"] for s in scores), sum(s["n"] for s in scores)
        widths = [s["width"] for s in scores if s["width"] is not None]
        shares = [s["held"] / s["n"] for s in scores if s["n"]]
        shown, logs = sum(s["shown10"] for s in scores), sum(s["logs10"] for s in scores)
        print(f"{name}: first past 10% median |error| {statistics.median(firsts) if firsts else math.nan:.1f}% "
              f"(target <= 5%), worst past 10% {max(worst, default=math.nan):.1f}% (target <= 25%), "
              f"intervals past 5% holding the total {held}/{n} = {held / n if n else math.nan:.0%} "
              f"(target >= 85%; mean of the runs' shares {statistics.fmean(shares) if shares else math.nan:.0%}), "
              f"median interval width {100 * statistics.median(widths) if widths else math.nan:.1f}% of the total, "
              f"training logs past 10% with a forecast {shown}/{logs}")


if __name__ == "__main__":
    main()
