"""`kinema` command: run a saved workflow headless, list nodes, write tiny fixture models, serve the editor."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


def _add_dirs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", help="folder holding diffusers/<model> folders (default: $KINEMA_MODELS_DIR "
                                        "or ./models)")
    p.add_argument("--input-dir", help="folder Load nodes read from (default: $KINEMA_INPUT_DIR or ./input; the "
                                       "workflow's own assets/ folder is searched too)")
    p.add_argument("--output-dir", help="folder outputs are written to (default: $KINEMA_OUTPUT_DIR or ./output)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kinema", description="Kinema: ComfyUI video nodes, headless.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a saved workflow (UI or API format JSON)")
    r.add_argument("workflow")
    r.add_argument("--set", action="append", default=[], metavar="ID.INPUT=VALUE",
                   help="override a node input, e.g. --set 12.seed=7 (repeatable)")
    _add_dirs(r)
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.add_parser("nodes", help="list Kinema's nodes")
    f = sub.add_parser("fixtures", help="write tiny random-weight models of every family (for testing)")
    f.add_argument("dir", help="models folder to write into (models go to DIR/diffusers/<name>)")
    f.add_argument("--overwrite", action="store_true")
    s = sub.add_parser("serve", help="open the ComfyUI editor against Kinema's own server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8188)
    _add_dirs(s)
    return p


def _configure(args) -> None:
    from ..nodes import _env
    _env.configure(models_dir=args.models_dir, input_dir=args.input_dir, output_dir=args.output_dir)


def apply_overrides(prompt: dict, sets: list[str], object_info: dict) -> None:
    """Apply `ID.INPUT=VALUE` overrides, typed by the node definition; errors name the node and the fix."""
    from .graph import GraphError
    for item in sets:
        key, sep, raw = item.partition("=")
        nid, dot, name = key.partition(".")
        if not sep or not dot:
            raise GraphError(f"--set {item!r}: expected ID.INPUT=VALUE. Fix: e.g. --set 12.seed=7.")
        if nid not in prompt:
            raise GraphError(f"--set {item!r}: no node {nid} in the workflow. Fix: use one of "
                             f"{', '.join(sorted(prompt, key=str))}.", node_id=nid)
        ctype = prompt[nid]["class_type"]
        spec = object_info.get(ctype, {}).get("input", {})
        kinds = {**spec.get("required", {}), **spec.get("optional", {})}
        if name not in kinds:
            raise GraphError(f"--set {item!r}: node {nid} ({ctype}) has no input `{name}`. Fix: use one of "
                             f"{', '.join(kinds)}.", node_id=nid, class_type=ctype, input_name=name)
        kind = kinds[name][0]
        try:
            value = {"INT": int, "FLOAT": float, "BOOLEAN": lambda v: v.lower() in ("1", "true", "yes")}.get(
                kind, str)(raw) if isinstance(kind, str) else raw
        except ValueError:
            raise GraphError(f"--set {item!r}: node {nid} ({ctype}) input `{name}` takes {kind}, got {raw!r}. "
                             f"Fix: give a {kind} value.", node_id=nid, class_type=ctype, input_name=name) from None
        prompt[nid]["inputs"][name] = value


def cmd_run(args) -> int:
    from .. import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    from ..nodes import _env
    from . import graph
    from .executor import Executor, Interrupted, NodeError, PromptInvalid
    _configure(args)
    wf_path = Path(args.workflow)
    _env.add_input_search_dir(wf_path.resolve().parent / "assets")
    executor = Executor(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)
    try:
        prompt, _ui = graph.load_workflow(wf_path, executor.object_info)
        apply_overrides(prompt, args.set, executor.object_info)
    except graph.GraphError as exc:
        print(f"kinema: {exc}", file=sys.stderr)
        return EXIT_INVALID
    bars: dict[str, object] = {}

    def on_event(kind, data):
        if args.quiet:
            return
        if kind == "executing":
            ctype = prompt[data["node"]]["class_type"]
            print(f"[{data['node']}] {NODE_DISPLAY_NAME_MAPPINGS.get(ctype, ctype)}", file=sys.stderr, flush=True)
        elif kind == "progress":
            from tqdm import tqdm
            bar = bars.get(data["node"])
            if bar is None:
                bar = bars[data["node"]] = tqdm(total=data["max"], desc="  steps", unit="step", file=sys.stderr)
            bar.total = data["max"]
            bar.update(data["value"] - bar.n)
            if data["value"] >= data["max"]:
                bar.close()
        elif kind == "executed":
            for entries in data["output"].values():
                for e in entries if isinstance(entries, list) else []:
                    if isinstance(e, dict) and "filename" in e and e.get("type") == "output":
                        print(f"  wrote {_env.output_dir() / e.get('subfolder', '') / e['filename']}",
                              file=sys.stderr)

    try:
        result = executor.run(prompt, prompt_id="cli", on_event=on_event)
    except PromptInvalid as exc:
        print(f"kinema: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except NodeError as exc:
        print(f"kinema: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (Interrupted, KeyboardInterrupt):
        print("kinema: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not args.quiet:
        print(f"done in {result.seconds:.1f} s ({len(result.executed)} nodes run, {len(result.cached)} cached)",
              file=sys.stderr)
    print(json.dumps(result.outputs))
    return EXIT_OK


def cmd_nodes(args) -> int:
    from .. import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    for name, cls in NODE_CLASS_MAPPINGS.items():
        print(f"{name:28} {NODE_DISPLAY_NAME_MAPPINGS.get(name, name):30} {cls.CATEGORY}")
    return EXIT_OK


def cmd_fixtures(args) -> int:
    from ..models.fixtures import write_fixtures
    t = time.perf_counter()
    for path in write_fixtures(Path(args.dir), overwrite=args.overwrite):
        print(path)
    print(f"wrote tiny RANDOM-WEIGHT fixture models in {time.perf_counter() - t:.1f} s: they exercise every code "
          f"path but make noise, not real videos.", file=sys.stderr)
    return EXIT_OK


def cmd_serve(args) -> int:
    _configure(args)
    try:
        from .server import serve
    except ImportError as exc:
        print(f"kinema serve needs the server extra: pip install -e '.[server]' ({exc})", file=sys.stderr)
        return EXIT_FAILED
    return serve(args.host, args.port)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return {"run": cmd_run, "nodes": cmd_nodes, "fixtures": cmd_fixtures, "serve": cmd_serve}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
