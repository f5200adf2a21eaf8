"""Kinema inside ComfyUI calls ComfyUI's own device, memory, progress, preview and interrupt APIs (nodes/env.py,
nodes/in_comfy.py, models/interrupts.py).

ComfyUI is not installed here, so a small stand-in `comfy` package (and `folder_paths`) is written to a temporary
folder and put on sys.path by the `comfy` fixture: it has the functions Kinema calls, with ComfyUI's names and
arguments (comfy/model_management.py, comfy/utils.py, comfy/cli_args.py of ComfyUI 0.3.64), and records the calls.
The nodes run the real fixture models; what they compute must not change because ComfyUI manages the memory.
tests/nodes/test_real_comfy.py runs the pack in a real ComfyUI where one is available."""
from __future__ import annotations

import sys
import textwrap

import PIL.Image
import pytest
import torch

import kinema
from kinema.nodes import env, in_comfy

N = kinema.NODE_CLASS_MAPPINGS

STANDIN = {
    "comfy/__init__.py": "",
    "comfy/model_management.py": """
        import enum
        import torch
        CALLS = []                      # (function name, arguments) in call order
        LOADED = []                     # the models handed to load_models_gpu, newest first (current_loaded_models)
        DEVICE = torch.device("cpu")
        CHECKS = {"count": 0, "stop_at": None}

        class VRAMState(enum.Enum):
            DISABLED = 0
            NO_VRAM = 1
            LOW_VRAM = 2
            NORMAL_VRAM = 3
            HIGH_VRAM = 4
            SHARED = 5

        vram_state = VRAMState.NORMAL_VRAM

        class InterruptProcessingException(Exception):
            pass

        def get_torch_device():
            CALLS.append(("get_torch_device",))
            return DEVICE

        def unet_offload_device():
            return torch.device("cpu")

        def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                            force_full_load=False):
            CALLS.append(("load_models_gpu", list(models)))
            for m in models:
                for old in [o for o in LOADED if m.is_clone(o)]:     # as ComfyUI: its entry is replaced
                    LOADED.remove(old)
                    old.detach(False)
                m.partially_load(m.load_device, 1e32)
                LOADED.insert(0, m)

        def free_memory(memory_required, device, keep_loaded=[]):
            CALLS.append(("free_memory", memory_required, device))
            freed = []
            for m in list(LOADED):
                if m.load_device == device and m not in keep_loaded:
                    m.partially_unload(m.offload_device, memory_required)
                    m.detach(True)
                    LOADED.remove(m)
                    freed.append(m)
            return freed

        def unload_all_models():
            free_memory(1e30, get_torch_device())

        def throw_exception_if_processing_interrupted():
            CHECKS["count"] += 1
            if CHECKS["stop_at"] is not None and CHECKS["count"] >= CHECKS["stop_at"]:
                CHECKS["stop_at"] = None
                raise InterruptProcessingException()
    """,
    "comfy/utils.py": """
        PROGRESS_BAR_ENABLED = True
        BARS = []

        class ProgressBar:
            def __init__(self, total, node_id=None):
                self.total, self.updates = total, []
                BARS.append(self)

            def update_absolute(self, value, total=None, preview=None):
                self.updates.append((value, total, preview))
    """,
    "comfy/cli_args.py": """
        import enum
        import types

        class LatentPreviewMethod(enum.Enum):
            NoPreviews = "none"
            Auto = "auto"
            Latent2RGB = "latent2rgb"
            TAESD = "taesd"

        args = types.SimpleNamespace(preview_method=LatentPreviewMethod.NoPreviews, preview_size=512)
    """,
}
FOLDER_PATHS = """
    INPUT = None
    def get_input_directory():
        return INPUT
    def get_output_directory():
        return INPUT + "/../output"
    def get_temp_directory():
        return INPUT + "/../temp"
    def get_folder_paths(name):
        raise KeyError(name)
"""
NAMES = ("comfy", "comfy.model_management", "comfy.utils", "comfy.cli_args", "folder_paths")


def _standin(tmp_path, monkeypatch, files: dict):
    root = tmp_path / "standin"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(root))
    for name in NAMES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    import comfy.cli_args
    import comfy.model_management
    import comfy.utils
    return comfy


@pytest.fixture
def comfy(tmp_path, monkeypatch):
    """The stand-in ComfyUI modules, imported (so Kinema sees it runs inside ComfyUI); gone after the test."""
    yield _standin(tmp_path, monkeypatch, STANDIN)
    for name in NAMES:
        sys.modules.pop(name, None)


def _load(model="fixture-wan-t2v"):
    return N["KinemaLoadVideoModel"]().load(model, "auto", "auto", "fp32")[0]


def _sample(model, cond, context=None, steps=2, length=9):
    return N["KinemaTemporalSampler"]().sample(model, cond, cond, length, 32, 32, steps, 1.0, 5, "flow_euler", 5.0,
                                               1.0, context=context)[0]["samples"]


def test_every_node_function_goes_through_the_comfy_bridge():
    for cls in N.values():
        assert getattr(getattr(cls, cls.FUNCTION), "kinema_node_call", False), cls.__name__


def test_device_auto_is_comfys_and_a_gpu_is_refused_under_cpu(comfy):
    assert in_comfy.pick_device("auto") == torch.device("cpu")
    assert comfy.model_management.CALLS == [("get_torch_device",)]
    with pytest.raises(ValueError, match=r"`device` is a GPU but ComfyUI runs on the CPU \(--cpu\).*auto or cpu"):
        in_comfy.pick_device("cuda")


def test_loading_asks_comfy_to_free_what_the_files_need(comfy, models_dir):
    folder = models_dir / "diffusers" / "fixture-wan-t2v"
    need = sum(f.stat().st_size for f in folder.rglob("*.safetensors"))
    in_comfy.free_for(torch.device("cuda"), folder, None)
    assert comfy.model_management.CALLS == [("free_memory", need, torch.device("cuda"))] and need > 0
    in_comfy.free_for(torch.device("cpu"), folder)           # ComfyUI never frees for the CPU
    assert len(comfy.model_management.CALLS) == 1


def test_models_are_registered_loaded_before_use_and_unloadable(comfy, kinema_dirs, one_thread):
    """The loader hands the model to ComfyUI's memory manager; each node using it loads it first; ComfyUI can
    unload it (unload_all_models) and the next node brings it back; the results equal those outside ComfyUI."""
    mm = comfy.model_management
    model = _load()
    patcher = in_comfy.patcher_of(model)
    assert patcher is not None and patcher.model is model and mm.LOADED == [patcher]
    mods = [model.transformer, model.vae, model.pipe.text_encoder]
    assert patcher.model_size() == sum(t.numel() * t.element_size() for m in mods
                                       for t in (*m.parameters(), *m.buffers()))
    assert patcher.loaded_size() == patcher.model_size()
    mm.CALLS.clear()
    cond = N["KinemaTextEncode"]().encode(model, "a red ball")[0]
    assert mm.CALLS == [("load_models_gpu", [patcher])]
    mm.unload_all_models()
    assert mm.LOADED == []
    latents = _sample(model, cond)
    assert mm.CALLS[-1] == ("load_models_gpu", [patcher]) and mm.LOADED == [patcher]
    sys.modules.pop("comfy")            # the same run outside ComfyUI
    try:
        plain_model = _load()
        plain = _sample(plain_model, N["KinemaTextEncode"]().encode(plain_model, "a red ball")[0])
    finally:
        sys.modules["comfy"] = comfy
    assert in_comfy.patcher_of(plain_model) is None
    assert torch.equal(latents, plain)


def test_patcher_loads_and_unloads_whole_as_comfy_asks():
    """The interface ComfyUI's LoadedModel drives, on a module moved between the CPU and the meta device."""
    class Model:
        pass

    owner, lin = Model(), torch.nn.Linear(4, 4)
    p = in_comfy.Patcher(owner, [lin], torch.device("cpu"), torch.device("meta"))
    size = 4 * 4 * 4 + 4 * 4
    assert (p.model, p.model_size(), p.loaded_size(), p.current_loaded_device()) == (owner, size, size, lin.weight.device)
    assert p.is_clone(p) and not p.is_clone(in_comfy.Patcher(owner, [lin], p.load_device, p.offload_device))
    p.detach(False)                                          # ComfyUI re-listing it: nothing moves
    assert lin.weight.device.type == "cpu" and p.loaded_size() == size
    assert p.partially_unload(p.offload_device, 1) == size   # whole, whatever was asked
    assert lin.weight.device.type == "meta" and p.loaded_size() == 0 and p.current_loaded_device().type == "meta"
    lin.to_empty(device="cpu")
    p.loaded = False
    assert p.partially_load(torch.device("cpu"), 1) == size and p.loaded_size() == size
    p.detach()
    assert lin.weight.device.type == "meta"


def test_lowvram_puts_models_back_in_ram_after_each_node(comfy, kinema_dirs, one_thread, monkeypatch):
    mm = comfy.model_management
    model = _load()
    detached = []
    monkeypatch.setattr(in_comfy.Patcher, "detach",          # record the unloads to RAM (unpatch_all)
                        lambda self, unpatch_all=True: detached.append(self) if unpatch_all else None)
    N["KinemaTextEncode"]().encode(model, "x")
    assert detached == []                                   # normal VRAM: it stays loaded
    monkeypatch.setattr(mm, "vram_state", mm.VRAMState.LOW_VRAM)
    N["KinemaTextEncode"]().encode(model, "x")
    assert detached == [in_comfy.patcher_of(model)]


def test_lora_views_load_their_base_model(comfy, kinema_dirs, one_thread, models_dir, tmp_path):
    from kinema.models.lora import load_lora
    mm = comfy.model_management
    model = _load()
    view, _ = load_lora(model, models_dir / "loras" / "fixture-wan-lightx2v.safetensors", 1.0)
    assert in_comfy.patcher_of(view) is in_comfy.patcher_of(model)
    mm.CALLS.clear()
    N["KinemaTextEncode"]().encode(view, "x")
    assert mm.CALLS == [("load_models_gpu", [in_comfy.patcher_of(model)])]


def test_a_stop_is_seen_between_context_windows(comfy, kinema_dirs, one_thread):
    """ComfyUI's stop check runs before every window of a step: stopping at the last window's check ends the run inside
    the first step (no step reported to the progress bar), not after the whole step."""
    mm, utils = comfy.model_management, comfy.utils
    model = _load()
    cond = N["KinemaTextEncode"]().encode(model, "x")[0]
    ctx = N["KinemaContextOptions"]().options(9, 4, "pyramid", "shuffle_context", "predictions", "none", 0.0)[0]
    mm.CHECKS.update(count=0, stop_at=None)
    _sample(model, cond, ctx, steps=1, length=17)            # 5 latent frames in windows of 3: one check each
    windows = mm.CHECKS["count"]
    assert windows >= 2
    utils.BARS.clear()
    mm.CHECKS.update(count=0, stop_at=windows)               # stop before the last window of the first step
    with pytest.raises(mm.InterruptProcessingException):
        _sample(model, cond, ctx, steps=3, length=17)
    assert mm.CHECKS["count"] == windows and utils.BARS[-1].updates == []


def test_kinema_hosts_stop_between_windows_through_reporting(kinema_dirs, one_thread):
    model = _load()
    cond = N["KinemaTextEncode"]().encode(model, "x")[0]
    ctx = N["KinemaContextOptions"]().options(9, 4, "pyramid", "shuffle_context", "predictions", "none", 0.0)[0]
    checks, steps = [], []

    def stop():
        checks.append(1)
        if len(checks) == 2:
            raise KeyboardInterrupt

    with env.reporting(lambda v, t, p: steps.append(v), previews=False, interrupt=stop):
        with pytest.raises(KeyboardInterrupt):
            _sample(model, cond, ctx, steps=2, length=17)
    assert len(checks) == 2 and steps == []


def test_progress_reaches_comfys_bar_and_terminal_and_previews_follow_its_setting(comfy, kinema_dirs, one_thread,
                                                                                  capsys):
    utils, cli = comfy.utils, comfy.cli_args
    model = _load()
    cond = N["KinemaTextEncode"]().encode(model, "x")[0]
    utils.BARS.clear()
    _sample(model, cond, steps=3)                            # --preview-method none (ComfyUI's default)
    assert [(v, t, p) for v, t, p in utils.BARS[-1].updates] == [(1, 3, None), (2, 3, None), (3, 3, None)]
    assert "Kinema" in capsys.readouterr().err               # the terminal bar
    cli.args.preview_method, cli.args.preview_size = cli.LatentPreviewMethod.Latent2RGB, 256
    _sample(model, cond, steps=2)
    previews = [p for _, _, p in utils.BARS[-1].updates]
    assert [(p[0], p[2]) for p in previews] == [("JPEG", 256)] * 2
    assert all(isinstance(p[1], PIL.Image.Image) for p in previews)      # the family's latent -> RGB preview
    utils.PROGRESS_BAR_ENABLED = False
    capsys.readouterr()
    _sample(model, cond, steps=1)
    assert "Kinema" not in capsys.readouterr().err


def test_the_shipped_assets_are_found_inside_comfy(tmp_path, monkeypatch):
    """Inside ComfyUI the Load nodes list and load the pack's workflows/assets after ComfyUI's input folder, and a
    missing file's fix speaks of ComfyUI (no --input-dir); outside, of Kinema's flags."""
    (tmp_path / "input").mkdir()
    outside = pytest.raises(FileNotFoundError, match=r"--input-dir or KINEMA_INPUT_DIR")
    with env.using(env.Folders.of(tmp_path, tmp_path / "input", tmp_path, tmp_path)), outside:
        env.find_input("sprite.png")
    _standin(tmp_path, monkeypatch, {**STANDIN, "folder_paths.py": FOLDER_PATHS})
    import folder_paths
    folder_paths.INPUT = str(tmp_path / "input")
    try:
        files = N["KinemaLoadImage"].INPUT_TYPES()["required"]["image"][0]
        assert {"sprite.png", "scene.png", "portrait.png"} <= set(files)
        assert "red_circle.mp4" in N["KinemaLoadVideo"].INPUT_TYPES()["required"]["video"][0]
        assert N["KinemaLoadImage"].VALIDATE_INPUTS("sprite.png") is True
        image, _ = N["KinemaLoadImage"]().load("sprite.png")
        assert image.shape[0] == 1 and image.shape[-1] == 3
        problem = N["KinemaLoadImage"].VALIDATE_INPUTS("nope.png")
        assert "upload button" in problem and "--input-directory" in problem and "--input-dir " not in problem
        (tmp_path / "input" / "sprite.png").write_bytes((env.BUNDLED_INPUTS / "scene.png").read_bytes())
        assert env.find_input("sprite.png") == tmp_path / "input" / "sprite.png"     # the user's file wins
    finally:
        for name in NAMES:
            sys.modules.pop(name, None)


@pytest.mark.gpu
def test_a_model_unloaded_to_ram_by_comfy_samples_the_same_on_the_gpu(comfy, kinema_dirs):
    """On CUDA: ComfyUI unloads Kinema's model to RAM (free_memory), the sampler's node loads it back, and the
    latents equal those of a run that never left the GPU (skipped without CUDA)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    mm = comfy.model_management
    mm.DEVICE = torch.device("cuda")
    model = _load()
    patcher = in_comfy.patcher_of(model)
    cond = N["KinemaTextEncode"]().encode(model, "a red ball")[0]
    kept = _sample(model, cond)
    mm.free_memory(1e30, patcher.load_device)
    assert patcher.loaded_size() == 0 and next(model.transformer.parameters()).device.type == "cpu"
    again = _sample(model, cond)
    assert next(model.transformer.parameters()).device.type == "cuda" and torch.equal(kept, again)
