"""LTX-2 from ComfyUI's files through the nodes: Load Video Model (Checkpoint) takes the all-in-one checkpoint with
its Gemma 3 `text_encoder`, Load Audio Model (Video to Audio) and Load Portrait Model take the same two files; every
refusal names the input and the fix."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from kinema.nodes import env
from kinema.nodes.loaders import KinemaLoadAudioModel, KinemaLoadCheckpoint, KinemaLoadPortraitModel

pytestmark = pytest.mark.usefixtures("one_thread")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))

CK, TE = "ltx-2-tiny.safetensors", "gemma_3_tiny.safetensors"


@pytest.fixture
def folders(tmp_path):
    from comfy_recipe import DATA, write
    data = DATA.parent / "ltx2"
    root = tmp_path / "models"
    (root / "checkpoints").mkdir(parents=True)
    (root / "text_encoders").mkdir()
    shutil.copy(data / "ltx2_tiny.safetensors", root / "checkpoints" / CK)
    shutil.copy(data / "gemma3_tiny.safetensors", root / "text_encoders" / TE)
    write("sd15_tiny", root / "checkpoints" / "sd15_tiny.safetensors")
    with env.using(env.Folders.of(root, tmp_path / "in", tmp_path / "out", tmp_path / "tmp")):
        yield root


def _refused(call, arg, *words):
    with pytest.raises(ValueError) as e:
        call()
    msg = str(e.value)
    assert msg.startswith(f"`{arg}` "), msg
    assert all(w in msg for w in words), msg


def test_checkpoint_node_loads_ltx2_with_its_gemma_file(folders):
    spec = KinemaLoadCheckpoint.INPUT_TYPES()
    assert spec["optional"]["text_encoder"][0] == ["none", TE] and CK in spec["required"]["checkpoint"][0]
    node = KinemaLoadCheckpoint()
    (model,) = node.load(CK, "(no motion modules in models/animatediff_models)", "cpu", "fp32", text_encoder=TE)
    assert model.path.name == CK and model.name == "ltx2"
    assert type(model.pipe.transformer).__name__ == "LTX2VideoTransformer3DModel"
    _refused(lambda: node.load(CK, "x", "cpu", "fp32"), "text_encoder", "is needed", "gemma_3_12B_it")
    _refused(lambda: node.load("sd15_tiny.safetensors", "x", "cpu", "fp32", text_encoder=TE), "text_encoder",
             "only for LTX-2", "none")


def test_audio_and_portrait_loaders_take_the_same_files(folders):
    spec = KinemaLoadAudioModel.INPUT_TYPES()["optional"]
    assert spec["checkpoint"][0] == ["none", CK, "sd15_tiny.safetensors"] and spec["text_encoder"][0] == ["none", TE]
    (audio,) = KinemaLoadAudioModel().load("(none)", "auto", "cpu", "fp32", checkpoint=CK, text_encoder=TE)
    assert audio.name == "ltx2" and audio.capabilities.video_to_audio and audio.path.name == CK
    (portrait,) = KinemaLoadPortraitModel().load("(none)", "cpu", "fp32", checkpoint=CK, text_encoder=TE)
    assert portrait.name == "ltx2_portrait" and portrait.capabilities.portrait
    _refused(lambda: KinemaLoadAudioModel().load("(none)", "auto", "cpu", "fp32", text_encoder=TE), "text_encoder",
             "only read together with an LTX-2 `checkpoint`", "set text_encoder to none")
    _refused(lambda: KinemaLoadAudioModel().load("(none)", "stable_audio", "cpu", "fp32", checkpoint=CK,
                                                 text_encoder=TE), "family", "auto or ltx2", "Set family to auto")
    _refused(lambda: KinemaLoadPortraitModel().load("(none)", "cpu", "fp32", checkpoint="sd15_tiny.safetensors",
                                                    text_encoder=TE), "checkpoint", "is not an LTX-2", "checkpoints/")
    _refused(lambda: KinemaLoadPortraitModel().load("(none)", "cpu", "fp32", checkpoint=CK), "text_encoder",
             "is needed", "text_encoders/")


def test_checkpoint_files_make_the_ltx2_video_family_with_sound_equal_to_diffusers(folders):
    """The files route gives the same video family as a diffusers folder: picture and sound in one pass, equal to
    LTX2Pipeline built from the very components read from the two files."""
    from fractions import Fraction
    from diffusers import LTX2Pipeline
    from kinema.models.joint import sample_clip
    from kinema.models.sampling import SamplerSettings
    from test_ltx2_video import _compare, _pipe
    (model,) = KinemaLoadCheckpoint().load(CK, "x", "cpu", "fp32", text_encoder=TE)
    assert model.name == "ltx2" and model.capabilities.joint_audio
    settings = SamplerSettings(num_frames=9, height=32, width=64, num_inference_steps=2, guidance_scale=3.0, seed=3,
                               frame_rate=Fraction(25))
    clip = sample_clip(model, model.encode_prompt("a drum"), model.encode_prompt(""), settings)
    _compare(model, clip, settings, _pipe(model, LTX2Pipeline), dict(prompt="a drum", negative_prompt=""))
