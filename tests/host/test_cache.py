"""host/cache.py and the executor's memory: outputs kept within a RAM budget (the current prompt's models always),
intermediate outputs let go once read, memory handed back after large runs (issue 18, finding 1)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import kinema
from kinema.host.cache import OutputCache, estimate_bytes
from kinema.host.executor import Executor
from kinema.host.ui_to_api import load_workflow

MB = 1 << 20
REPO = Path(__file__).resolve().parents[2]


def _rss() -> float:
    import psutil
    return psutil.Process().memory_info().rss / MB


# ---------------------------------------------------------------------------------------------------------------
# Sizes and eviction
# ---------------------------------------------------------------------------------------------------------------
def test_estimate_counts_tensors_modules_and_containers_once():
    frames = torch.zeros(9, 64, 64, 3)                                 # 9*64*64*3*4 bytes
    assert estimate_bytes((frames,)) == (frames.numel() * 4, False)
    assert estimate_bytes(({"samples": frames}, [frames, frames[:2]], frames))[0] == frames.numel() * 4   # one storage

    class Family:                                                      # a KINEMA_MODEL: a plain object with modules
        def __init__(self):
            self.pipe = type("Pipe", (), {})()
            self.pipe.transformer = torch.nn.Linear(100, 50)
            self.name = "tiny"
    size, model = estimate_bytes((Family(),))
    assert model and size == (100 * 50 + 50) * 4 + len("tiny")


def test_lru_within_budget_keeps_the_current_prompts_models():
    cache = OutputCache(budget=3 * MB)
    model = torch.nn.Linear(1024, 1024)                                # 4 MB: over the whole budget
    cache.begin(["load", "a"])
    cache.put("load", (model,), None)
    cache.put("a", (torch.zeros(MB // 4),), None)                      # 1 MB
    assert "load" in cache and "a" in cache                            # the current prompt's model stays
    cache.begin(["load", "b"])
    for name in "bcd":
        cache.put(name, (torch.zeros(MB // 4),), None)
    assert list(cache) == ["load", "b", "c", "d"] and "a" not in cache    # a (earlier prompt) went first
    cache.get("b")                                                     # b used: c is now the least recently used
    cache.put("e", (torch.zeros(MB // 4),), None)
    assert "c" not in cache and {"load", "b", "d", "e"} <= set(cache)
    cache.begin(["other"])                                             # another model: the old one is over budget
    assert "load" not in cache and cache.bytes <= 3 * MB
    assert cache.freed >= 4 * MB + 2 * MB
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0
    assert cache.release_memory() is False                            # under TRIM_AFTER: nothing to give back
    assert cache.release_memory(force=True) is True and cache.freed == 0


def test_cached_node_does_not_need_its_inputs():
    runs = []

    class Source:
        CATEGORY, RETURN_TYPES, FUNCTION = "t", ("INT",), "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"v": ("INT", {})}}

        def run(self, v):
            runs.append("source")
            return (torch.full((1000,), v),)

    class Show(Source):
        OUTPUT_NODE = True
        RETURN_TYPES = ()

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"x": ("INT", {}), "label": ("STRING", {})}}

        def run(self, x, label):
            runs.append("show")
            return {"ui": {"text": [f"{label}{int(x[0])}"]}, "result": ()}

    ex = Executor({"Source": Source, "Show": Show}, cache_bytes=0)       # budget 0: only what a run needs
    prompt = {"1": {"class_type": "Source", "inputs": {"v": 3}},
              "2": {"class_type": "Show", "inputs": {"x": ["1", 0], "label": "n="}}}
    assert ex.run(prompt).outputs == {"2": {"text": ["n=3"]}} and runs == ["source", "show"]
    prompt["2"]["inputs"]["label"] = "v="                              # the source's output was evicted: it reruns
    assert ex.run(prompt).outputs == {"2": {"text": ["v=3"]}} and runs == ["source", "show"] * 2
    ex = Executor({"Source": Source, "Show": Show})
    runs.clear()
    ex.run(prompt)
    ex.cache.retain([s for s in ex.cache if ex.cache.get(s)[1]])     # keep the output node's entry only
    again = ex.run(prompt)                                             # the output node is cached: nothing runs
    assert runs == ["source", "show"] and again.executed == [] and again.outputs == {"2": {"text": ["v=3"]}}


# ---------------------------------------------------------------------------------------------------------------
# Real runs: RSS stays bounded (Kinema-Tiny, bundled; no fixtures needed)
# ---------------------------------------------------------------------------------------------------------------
BUDGET = 64 * MB
NOISE = 96 * MB             # allocator and library noise an RSS reading may show on top of the budget


@pytest.fixture
def tiny_executor(tmp_path):
    from kinema.nodes import env
    folders = env.Folders.of(models=tmp_path / "models", input=tmp_path / "input", output=tmp_path / "output",
                             temp=tmp_path / "temp").searching(REPO / "workflows" / "assets")
    ex = Executor(kinema.NODE_CLASS_MAPPINGS, kinema.NODE_DISPLAY_NAME_MAPPINGS, folders=folders, cache_bytes=BUDGET)
    ex.previews = False
    return ex


@pytest.mark.slow
def test_fifty_distinct_seeds_keep_rss_bounded(tiny_executor, one_thread):
    """Before: every run's outputs stayed (+7 MB a run here: 9 frames at 256x256; measured +456 MB over runs 5..50).
    Now: growth after the first runs stays within the stated budget plus noise."""
    ex = tiny_executor
    info = ex.node_definitions()
    prompt, _ = load_workflow(REPO / "workflows" / "text_to_video.json", info)
    prompt["4"]["inputs"]["steps"] = 2
    rss = []
    for seed in range(50):
        run = json.loads(json.dumps(prompt))
        run["4"]["inputs"]["seed"] = seed
        result = ex.run(run, object_info=info)
        assert sorted(result.executed) == (["1", "2", "3", "4", "5", "6", "7"] if seed == 0 else ["4", "5", "6", "7"])
        rss.append(_rss())
    growth = max(rss[5:]) - rss[4]
    assert growth < (BUDGET + NOISE) / MB, f"RSS grew {growth:.0f} MB after run 5: {[round(r) for r in rss]}"
    loader_sig = next(s for s in ex.cache if estimate_bytes(ex.cache.get(s)[0])[1])
    assert loader_sig in ex.cache                                       # the model stayed loaded throughout
    models = sum(estimate_bytes(ex.cache.get(s)[0])[0] for s in [loader_sig])
    assert ex.cache.bytes - models <= BUDGET
    again = ex.run(run, object_info=info)                               # the last prompt again: all cached
    assert again.executed == []


@pytest.mark.slow
def test_chain_of_300_resizes_does_not_balloon(tiny_executor, one_thread):
    """Before: all 300 outputs (7 MB each) stayed in the cache and in the run's values: +2 GB. Now each output is let
    go once its reader ran, and the cache keeps at most the budget."""
    ex = tiny_executor
    prompt = {"1": {"class_type": "KinemaLoadVideo", "inputs": {"video": "red_circle.mp4", "start_frame": 0,
                                                                "frame_count": 0, "width": 256, "height": 256}}}
    for i in range(2, 302):
        prompt[str(i)] = {"class_type": "KinemaResizeVideo",
                          "inputs": {"images": [str(i - 1), 0], "scale_by": 1.0, "method": "nearest"}}
    prompt["302"] = {"class_type": "KinemaPreviewVideo", "inputs": {"images": ["301", 0], "fps": 8.0}}
    before = _rss()
    peak = [before]
    result = ex.run(prompt, on_event=lambda kind, data: peak.append(_rss()) if kind == "executing" else None)
    assert len(result.executed) == 302 and result.outputs["302"]
    grew, kept = max(peak) - before, _rss() - before
    assert grew < (BUDGET + NOISE) / MB and kept < (BUDGET + NOISE) / MB, (grew, kept)
    assert ex.cache.bytes <= BUDGET
