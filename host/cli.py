"""`kinema` command: run a saved workflow headless, run it over a sweep of values (batch), list nodes, write tiny
fixture models, serve the editor, and resume a failed decode from saved latents."""
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
    d = sub.add_parser("decode", help="decode saved latents (*.latents.safetensors, written by Decode And Save "
                                      "Video) into a video: resumes a decode that failed")
    d.add_argument("latents", help="the .latents.safetensors file")
    d.add_argument("--model", help="model folder under models/diffusers (default: the one named in the file)")
    d.add_argument("--output", help="video file to write (default: beside the latents file, same name, with the "
                                    "format's extension)")
    d.add_argument("--format", choices=["mp4", "webm", "webp", "gif"],
                   help="video format (default: the one in the file, else mp4)")
    d.add_argument("--fps", type=float, help="frames per second (default: the one in the file)")
    d.add_argument("--memory-mb", type=int, default=0, help="MB the VAE may use (default 0: automatic)")
    d.add_argument("--tile-size", type=int, default=0, help="tile side in pixels (default 0: automatic)")
    d.add_argument("--device", default="auto", help="auto, cuda, mps or cpu (default auto)")
    d.add_argument("--dtype", default="auto", help="auto, bf16, fp16 or fp32 (default auto; Wan's VAE stays fp32)")
    d.add_argument("--overwrite", action="store_true", help="replace an existing video file")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_dirs(d)
    b = sub.add_parser("batch", help="run a workflow once per combination of swept input values (prompts x seeds "
                                     "x models), in this process or on a Ray cluster (--ray)")
    b.add_argument("workflow")
    b.add_argument("--sweep", action="append", default=[], metavar="ID.INPUT=VALUES",
                   help="values for a node input: a text file (one value a line), an integer range A..B (both "
                        "included) or a list a,b,c; several --sweep multiply, e.g. --sweep 2.text=prompts.txt "
                        "--sweep 4.seed=1..16")
    b.add_argument("--set", action="append", default=[], metavar="ID.INPUT=VALUE",
                   help="override a node input in every job, e.g. --set 4.steps=20 (repeatable)")
    b.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run the jobs on Ray (pip install -e '.[ray]'): no value starts a local Ray for this run "
                        "(127.0.0.1 only); ADDRESS joins a cluster (auto, ray://head:10001). Without --ray the "
                        "jobs run one after another in this process")
    b.add_argument("--workers", type=int, help="Ray workers (one job each at a time; models load once per worker). "
                                               "Default: as many as the CPUs/GPUs fit")
    b.add_argument("--cpus-per-job", type=float, default=1.0, help="CPUs a Ray worker reserves (default 1)")
    b.add_argument("--gpus-per-job", type=float, help="GPUs a Ray worker reserves (default 1 if the cluster has GPUs, "
                                                      "else 0; 0.5 puts two workers on a GPU)")
    b.add_argument("--name", help="batch folder under the output folder (default batch_<workflow>_<date_time>)")
    b.add_argument("--resume", metavar="MANIFEST", help="finish an earlier batch: give its manifest.jsonl and the "
                                                        "same workflow and sweeps; jobs already done are skipped")
    _add_dirs(b)
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    s = sub.add_parser("serve", help="open the ComfyUI editor against Kinema's own server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8188)
    s.add_argument("--cache-mb", type=int, metavar="MB",
                   help="RAM for cached node outputs of earlier runs (default: $KINEMA_CACHE_MB, else 1024 or an "
                        "eighth of the RAM if less); the current workflow's loaded models are kept in any case")
    _add_dirs(s)
    return p


def _folders(args):
    """The folders given on the command line (others from the environment): what the nodes run with."""
    from ..nodes import env
    return env.Folders.of(models=getattr(args, "models_dir", None), input=getattr(args, "input_dir", None),
                          output=getattr(args, "output_dir", None))


def cmd_run(args) -> int:
    from .. import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    from ..nodes import env
    from .executor import Executor, Interrupted, NodeError
    from .prompt import GraphError, apply_overrides
    from .ui_to_api import load_workflow
    from .validate import PromptInvalid
    wf_path = Path(args.workflow)
    executor = Executor(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS,
                        folders=env.folders().searching(wf_path.resolve().parent / "assets"))
    executor.previews = False                   # a terminal shows no previews: do not make them
    _clean_temp_files(executor.folders)
    info = executor.node_definitions()          # once: to read the workflow, type --set, validate and run
    try:
        prompt, _ui = load_workflow(wf_path, info)
        apply_overrides(prompt, args.set, info)
    except GraphError as exc:
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
                        print(f"  wrote {executor.folders.output / e.get('subfolder', '') / e['filename']}",
                              file=sys.stderr)

    try:
        result = executor.run(prompt, prompt_id="cli", on_event=on_event, object_info=info)
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


def _clean_temp_files(folders) -> None:
    """Remove the hidden temp files a killed run left (files.remove_stale_temp_files) before this one writes."""
    from .files import remove_stale_temp_files
    remove_stale_temp_files([folders.output, folders.input, folders.temp])


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


def cmd_decode(args) -> int:
    """Resume a failed decode: saved latents -> the video, streamed chunk by chunk like Decode And Save Video."""
    from ..models import vae_tiling
    from ..models.devices import pick_device, pick_dtype
    from ..models.families import load_model
    from ..nodes import env
    try:
        latents, info, audio = vae_tiling.load_latents(Path(args.latents))
        fmt = args.format or info.format or "mp4"
        fps = args.fps or info.fps
        if not fps:
            raise ValueError("`--fps` is needed: the latents file does not record the video's fps. Fix: pass e.g. "
                             "--fps 16.")
        out = Path(args.output) if args.output else vae_tiling.video_path_for(Path(args.latents), fmt)
        if out.exists() and not out.is_file():
            raise ValueError(f"`--output` must be a video file path, got {str(out)!r}, which exists and is not a "
                             f"regular file (a folder, device or pipe). Fix: give a new file path.")
        if out.exists() and not args.overwrite:
            raise ValueError(f"`--output` {str(out)!r} already exists. Fix: pass --overwrite or another --output.")
        name = args.model or info.model
        device = pick_device(args.device)
        model = load_model(env.find_model("diffusers", name), info.family, device, pick_dtype(args.dtype, device))
        settings = vae_tiling.TileSettings(memory_mb=args.memory_mb, tile_px=args.tile_size)
        settings.check()
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"kinema: {exc}", file=sys.stderr)
        return EXIT_INVALID
    bar = None
    if not args.quiet:
        from tqdm import tqdm
        bar = tqdm(total=info.frames, desc="  frames", unit="frame", file=sys.stderr)

    def on_frames(done, total):
        if bar is not None:
            bar.update(done - bar.n)

    try:
        vae_tiling.decode_to_file(model, latents, out, fps, fmt, audio=audio, settings=settings,
                           metadata=info.tags or None, on_frames=on_frames)
    except KeyboardInterrupt:
        print("kinema: interrupted (no video written; the latents file is unchanged)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, RuntimeError) as exc:
        print(f"kinema: decode failed: {exc} (no video written; the latents file is unchanged)", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if bar is not None:
            bar.close()
    print(json.dumps({"video": str(out), "frames": info.frames, "fps": fps, "format": fmt}))
    return EXIT_OK


def cmd_batch(args) -> int:
    """Expand the sweeps into jobs and run them; prints the summary as JSON (the manifest has every job)."""
    from . import batch
    from .prompt import GraphError
    from .validate import PromptInvalid
    from ..nodes import env
    try:
        sweeps = [batch.parse_sweep(s) for s in args.sweep]
        _clean_temp_files(env.folders())
        result = batch.run_batch(args.workflow, sweeps, args.set, name=args.name, resume=args.resume, ray=args.ray,
                                 workers=args.workers, cpus_per_job=args.cpus_per_job,
                                 gpus_per_job=args.gpus_per_job, quiet=args.quiet)
    except (GraphError, PromptInvalid, batch.BatchError) as exc:
        print(f"kinema: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except RuntimeError as exc:
        print(f"kinema: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("kinema: interrupted before the jobs started", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(json.dumps(result.to_json()))
    if result.interrupted:
        print(f"kinema: interrupted; finish with --resume {result.manifest}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if result.failed:
        print(f"kinema: {result.failed} of {result.jobs} jobs failed (errors in {result.manifest})", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_serve(args) -> int:
    try:
        from .server import serve
    except ImportError as exc:
        print(f"kinema serve needs the server extra: pip install -e '.[server]' ({exc})", file=sys.stderr)
        return EXIT_FAILED
    if args.cache_mb is not None and args.cache_mb < 0:
        print(f"kinema: `--cache-mb` must be 0 or more, got {args.cache_mb}. Fix: e.g. --cache-mb 1024.",
              file=sys.stderr)
        return EXIT_INVALID
    return serve(args.host, args.port, cache_mb=args.cache_mb)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from ..nodes import env
    command = {"run": cmd_run, "nodes": cmd_nodes, "fixtures": cmd_fixtures, "serve": cmd_serve,
               "decode": cmd_decode, "batch": cmd_batch}[args.cmd]
    with env.using(_folders(args)):
        return command(args)


if __name__ == "__main__":
    sys.exit(main())
