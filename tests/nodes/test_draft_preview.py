"""The user's tiny decoder (models/vae_approx, TAEHV layout): Video Decode / Decode And Save Video's `draft` input,
and live previews of real decoded frames instead of the linear map."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kinema.models import media, taehv
from kinema.nodes import env, widgets
from kinema.nodes.decode import KinemaDecodeAndSave, KinemaVideoDecode

TAEW2_1 = Path(__file__).resolve().parents[1] / "data" / "taehv" / "taew2_1.safetensors"   # 16 ch, 8 px, t 4


@pytest.fixture
def with_tiny(kinema_dirs):
    folder = kinema_dirs["models"] / "vae_approx"
    folder.mkdir(exist_ok=True)
    (folder / "taew2_1.safetensors").write_bytes(TAEW2_1.read_bytes())
    yield folder
    (folder / "taew2_1.safetensors").unlink()


def test_draft_decodes_with_the_tiny_decoder(wan, latent, with_tiny, kinema_dirs):
    full = KinemaVideoDecode().decode(wan, latent)[0]
    draft = KinemaVideoDecode().decode(wan, latent, draft=True)[0]
    expected = taehv.load(TAEW2_1).decode(latent["samples"])
    assert draft.shape == full.shape == (17, 32, 48, 3)                                # same frames, same size
    assert torch.equal(draft, expected) and not torch.allclose(draft, full, atol=0.05)
    KinemaDecodeAndSave().save(wan, latent, 16.0, "mp4", "Kinema/draft", draft=True)
    info = media.read_video_info(kinema_dirs["output"] / "Kinema" / "draft_00001_.mp4")
    assert (info.frames, info.width, info.height) == (17, 48, 32)


def test_draft_without_a_tiny_decoder_says_where_to_put_one(wan, latent, kinema_dirs):
    with pytest.raises(ValueError, match="`draft` needs a tiny decoder for this wan model .*vae_approx"):
        KinemaVideoDecode().decode(wan, latent, draft=True)
    assert KinemaVideoDecode.INPUT_TYPES()["optional"]["draft"][1]["default"] is False


def _previews(model, latents):
    seen = []
    with env.reporting(lambda value, total, preview: seen.append(preview), previews=True):
        on_step = widgets.step_progress(2, model)
        on_step(1, 2, latents)
        on_step(2, 2, latents)
    return seen


def test_previews_are_decoded_frames_when_the_user_has_a_tiny_decoder(wan, latent, kinema_dirs):
    import numpy as np
    z = latent["samples"]
    assert _previews(wan, z)[0].size == (6, 4)                                         # one pixel per latent cell
    folder = kinema_dirs["models"] / "vae_approx"                                      # the session's models folder:
    folder.mkdir(exist_ok=True)                                                        # the file goes again after
    (folder / "taew2_1.safetensors").write_bytes(TAEW2_1.read_bytes())
    try:
        real = _previews(wan, z)
    finally:
        (folder / "taew2_1.safetensors").unlink()
    assert [p.size for p in real] == [(48, 32)] * 2                                    # the full frame size
    first = taehv.load(TAEW2_1).decode(z[:, :, :1])[0]                                # (32, 48, 3)
    got = torch.from_numpy(np.asarray(real[0], dtype=np.float32)) / 255
    assert (got - first).abs().max() <= 1 / 255 + 1e-6                               # its first frame, as 8-bit
