"""The ``loev`` command line (docs/DESIGN.md section 6, a contract: tests and benchmarks use it).

``app.main`` opens the desktop app when ``loev`` has no arguments and otherwise calls
:func:`main`. A user's mistake (missing file, bad folder, unreadable checkpoint, empty
library) prints one ``loev: error: ...`` line on stderr and exits non-zero, without a
traceback. Every subcommand is a call on one :class:`engine.session.Session`, the door
the app uses too; nothing here imports torch unless audio has to be embedded.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

from tqdm import tqdm

from engine.config import check_semitones, check_tempo
from engine.errors import LoevError
from engine.model.heads import LOW_CONFIDENCE, aspect_caveat
from engine.text import json_text, safe_text
from engine.session import Session

PROG = "loev"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{PROG}: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _tempo(text: str) -> float:
    try:
        return check_tempo(float(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _semitones(text: str) -> float:
    try:
        return check_semitones(float(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Explore audio folders by key, tempo and vibe "
                     "(LOEV++ embeddings). Without arguments, opens the desktop app.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def library_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument("--library", metavar="DIR", type=Path,
                       help="library directory (default: the per-user data dir)")

    def checkpoint_opt(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--checkpoint", metavar="FILE", type=Path, help=what)

    p = sub.add_parser("scan", help="add folders to the library (incremental, resumable)")
    p.add_argument("folders", nargs="+", metavar="FOLDER")
    library_opt(p)
    checkpoint_opt(p, "model checkpoint (default: the shipped model)")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for another scan of the same library (default 0)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")

    p = sub.add_parser("query", help="nearest library tracks by key, tempo or vibe")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--by", choices=("key", "tempo", "vibe"), required=True)
    p.add_argument("-k", type=_positive_int, default=10, help="neighbours per query (10)")
    p.add_argument("--shift", type=_semitones, default=0.0, metavar="SEMITONES",
                   help="pitch-shift the query audio first")
    p.add_argument("--stretch", type=_tempo, default=1.0, metavar="RATIO",
                   help="time-stretch the query audio first (> 1 is faster)")
    library_opt(p)
    checkpoint_opt(p, "checkpoint for files that need embedding (default: the library's)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("curve", help="invariance curve of one file under pitch or tempo")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--transform", choices=("pitch", "tempo"), required=True)
    checkpoint_opt(p, "model checkpoint (default: the shipped model)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("analyze", help="key, BPM and sound type of each file")
    p.add_argument("files", nargs="+", metavar="FILE")
    library_opt(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("info", help="tracks, subspaces, model and problem files of a library")
    library_opt(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("duplicates", help="exact and near-duplicate groups of the library")
    library_opt(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("match", help="pitch shift and stretch that align RESULT to QUERY")
    p.add_argument("query", metavar="QUERY")
    p.add_argument("result", metavar="RESULT")
    checkpoint_opt(p, "model checkpoint (default: the shipped model)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("render", help="FILE shifted and stretched, as a 24-bit WAV (the "
                       "app's export)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--shift", metavar="SEMITONES", type=_semitones, required=True)
    p.add_argument("--stretch", metavar="RATIO", type=_tempo, default=1.0,
                   help="tempo ratio, 0.5..2 (> 1 faster; default 1)")
    p.add_argument("--out", metavar="OUT.wav", type=Path, required=True)
    return parser


def _print_json(obj: Any) -> None:
    # Strict JSON: a NaN is refused (ValueError, one line), never printed as bare NaN.
    sys.stdout.write(json_text(obj) + "\n")


# -- subcommands ---------------------------------------------------------------------


def cmd_scan(args: argparse.Namespace) -> int:
    bar: Any = None

    def progress(done: int, total: int, path: str | None) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="file", file=sys.stderr, mininterval=0.5,
                       dynamic_ncols=True, desc="scan")
        if path is not None:
            bar.update(done - bar.n)
            bar.set_postfix_str(safe_text(Path(path).name)[-40:], refresh=False)

    try:
        report = Session(args.library, args.checkpoint).scan(
            args.folders, progress=progress, lock_timeout=args.wait)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        _print_json(report.to_dict())
        return 0
    speed = report.audio_seconds / report.seconds if report.seconds else 0.0
    print(f"{safe_text(report.library)}: {report.found} audio files, {report.added} added, "
          f"{report.updated} updated, {report.removed} removed, {report.unchanged} unchanged"
          f"{' (re-embedded for a new model)' if report.reembedded else ''}; "
          f"{report.audio_seconds:.0f} s of audio in {report.seconds:.1f} s ({speed:.0f}x)")
    if report.estimated:
        print(f"  estimated key, BPM and type of {report.estimated} tracks")
    for path, reason in report.failed:
        print(f"  skipped {safe_text(path)}: {safe_text(reason)}")
    for path, reason in report.problems:
        print(f"  problem {safe_text(path)}: {safe_text(reason)}")
    for what in report.repaired:
        print(f"  repaired {safe_text(what)}")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    session = Session(args.library, args.checkpoint)
    try:
        results = [session.query(f, by=args.by, k=args.k, shift=args.shift,
                                 stretch=args.stretch) for f in args.files]
        # A key or tempo search on a file with no key or tempo says what its neighbours
        # share instead (the window's results title says the same).
        caveats = ["" if args.json or args.by not in ("key", "tempo") else
                   aspect_caveat(args.by, session.estimate_of(f)) for f in args.files]
    finally:
        session.close()
    if args.json:
        _print_json({"results": [r.to_dict() for r in results]})
        return 0
    for r, caveat in zip(results, caveats):
        print(safe_text(r.query) + caveat)
        for i, n in enumerate(r.neighbours, 1):
            print(f"  {i:3d}. {n.distance:.4f}  {safe_text(n.path)}")
    return 0


def cmd_curve(args: argparse.Namespace) -> int:
    curve = Session(checkpoint=args.checkpoint).curve(args.file, args.transform)
    if args.json:
        _print_json(curve)
        return 0
    names = list(curve["subspaces"])
    unit = "semitones" if args.transform == "pitch" else "rate"
    print(f"{unit:>10}  " + "  ".join(f"{n:>9}" for n in names))
    for i, v in enumerate(curve["values"]):
        print(f"{v:>10g}  " + "  ".join(f"{curve['subspaces'][n][i]:9.4f}" for n in names))
    return 0


def _format_estimate(row: dict[str, Any]) -> str:
    """One line of ``loev analyze``: key (Camelot), BPM and type, each with its confidence;
    an uncertain one is marked with "?", never left out."""
    def part(text: str, confidence: float) -> str:
        return f"{text}{'?' if confidence < LOW_CONFIDENCE else ''} {confidence:.0%}"

    key = f"{row['key']} ({row['camelot']})" if row["key"] is not None else "no key"
    bpm = f"{row['bpm']:.1f} BPM" if row["bpm"] is not None else "no tempo"
    return ", ".join([part(key, row["key_confidence"]), part(bpm, row["bpm_confidence"]),
                      part(row["type"], row["type_confidence"])])


def cmd_analyze(args: argparse.Namespace) -> int:
    session = Session(args.library)
    try:
        rows = session.analyze(args.files)
    finally:
        session.close()
    failed = 0
    for r in rows:  # in the order given: one stderr line per unreadable file
        if "error" in r:
            failed += 1
            sys.stdout.flush()
            sys.stderr.write(f"{PROG}: error: {safe_text(r['path'])}: {safe_text(r['error'])}\n")
        elif not args.json:
            print(f"{safe_text(r['path'])}: {_format_estimate(r)}")
    if args.json:
        _print_json({"results": [r for r in rows if "error" not in r]})
    return 1 if failed else 0


def cmd_info(args: argparse.Namespace) -> int:
    info = Session(args.library).info()
    if args.json:
        _print_json(info)
        return 0
    model = {k: safe_text(v) for k, v in info["model"].items()}  # metadata is untrusted
    print(f"library   {safe_text(info['library'])}")
    print(f"tracks    {info['tracks']} ({info['errors']} problem files, {info['pending']} pending)")
    print(f"model     {model['method']} {model['profile']} id {model['id'][:12]} "
          f"({model['checkpoint']})")
    print("subspaces " + ", ".join(f"{safe_text(k)} ({v}-d)" for k, v in info["subspaces"].items()))
    est = info["estimates"]
    if est["estimated"]:
        print(f"estimates {est['estimated']} tracks ({est['key']} with a key, "
              f"{est['tempo']} with a tempo)")
    if not info["index"]["up_to_date"]:
        print("index     out of date: run `loev scan` to finish")
    for p in info["problems"]:
        print(f"  problem {safe_text(p['path'])}: {safe_text(p['reason'])}")
    return 0


def cmd_duplicates(args: argparse.Namespace) -> int:
    groups = Session(args.library).duplicates()
    if args.json:
        _print_json({"groups": [g.to_dict() for g in groups]})
        return 0
    if not groups:
        print("no duplicates")
    for g in groups:
        print(f"{g.kind} ({len(g.paths)} files)")
        for path in g.paths:
            print(f"  {safe_text(path)}")
    return 0


def cmd_match(args: argparse.Namespace) -> int:
    result = Session(checkpoint=args.checkpoint).match(args.query, args.result)
    if args.json:
        _print_json(result)
        return 0
    print(f"shift {safe_text(args.result)} by {result['shift']:+g} semitones and stretch it "
          f"by {result['stretch']:.3g} to align it with {safe_text(args.query)}")
    for key in ("key_distance", "tempo_distance"):
        if f"{key}_before" in result:
            print(f"  {key.replace('_', ' ')}: {result[f'{key}_before']:.4f} -> "
                  f"{result[f'{key}_after']:.4f}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    out = Session().render(args.file, semitones=args.shift, tempo=args.stretch, out=args.out)
    print(f"wrote {out}")
    return 0


COMMANDS = {"scan": cmd_scan, "query": cmd_query, "analyze": cmd_analyze, "curve": cmd_curve, "info": cmd_info,
            "duplicates": cmd_duplicates, "match": cmd_match, "render": cmd_render}


def main(argv: list[str] | None = None) -> int:
    """Run one ``loev`` subcommand; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        return COMMANDS[args.command](args)
    except LoevError as e:
        sys.stderr.write(f"{PROG}: error: {safe_text(e)}\n")
        return 1
    except ValueError as e:  # bad values that argparse could not check (e.g. aspect weights)
        sys.stderr.write(f"{PROG}: error: {safe_text(e)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
