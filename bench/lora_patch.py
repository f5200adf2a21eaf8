"""LoRA patch and un-patch time at real size, in one run: a full-size Wan 2.1 1.3B transformer (random bf16 weights,
CPU) and a rank-32 LoRA in ComfyUI's layout on all 300 block linear layers (lightx2v-style extras: diff_b on their
biases, diff on the norms, diff_m on the modulation tables).

Prints: reading + matching the LoRA file (Load LoRA's work), patching and un-patching around one denoiser call (what
every predict of a LoRA view does: hooks + swapped small parameters), the same for a merge-into-the-weights
patcher (backup copy + W += up @ down, then copy back) for comparison, a forward pass without and with the LoRA
(the hooks' cost), and whether un-patching left every weight bit for bit as it was.

    OMP_NUM_THREADS=2 .venv/bin/python bench/lora_patch.py [--tokens 100]
Needs about 7 GB of RAM."""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

CONFIG = dict(num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096,
              freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
              eps=1e-6, rope_max_seq_len=1024)   # Wan 2.1 T2V 1.3B


def build_transformer(dtype=torch.bfloat16):
    """The full-size architecture with random weights (std 0.02), built without a slow default init."""
    from kinema.models.meta import init_empty_weights
    from diffusers import WanTransformer3DModel
    with init_empty_weights():
        tr = WanTransformer3DModel(**CONFIG)
    tr = tr.to_empty(device="cpu").to(dtype).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in tr.parameters():
            p.normal_(0.0, 0.02, generator=g)
    return tr


def build_lora(tr, rank: int = 32) -> dict[str, torch.Tensor]:
    from kinema.models.lora_keys import wan_original
    g = torch.Generator().manual_seed(1)
    out = {}
    for name, p in tr.named_parameters():
        if not name.startswith("blocks."):
            continue
        mod, _, leaf = wan_original(name).rpartition(".")
        key = f"diffusion_model.{mod}"
        if p.ndim == 2:
            out[f"{key}.lora_down.weight"] = (torch.randn(rank, p.shape[1], generator=g) * 0.02).bfloat16()
            out[f"{key}.lora_up.weight"] = (torch.randn(p.shape[0], rank, generator=g) * 0.02).bfloat16()
            out[f"{key}.alpha"] = torch.tensor(float(rank))
        elif leaf == "modulation":
            out[f"{key}.diff_m"] = (torch.randn(p.shape, generator=g) * 0.01).bfloat16()
        else:
            out[f"{key}.{'diff_b' if leaf == 'bias' else 'diff'}"] = (torch.randn(p.shape, generator=g) * 0.01).bfloat16()
    return out


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=100, help="latent tokens of the forward pass (a square of them)")
    args = ap.parse_args()
    from safetensors.torch import save_file
    from kinema.models.lora import load_lora
    torch.manual_seed(0)
    seconds, tr = timed(build_transformer)
    print(f"built Wan 2.1 1.3B (random bf16 weights, {sum(p.numel() for p in tr.parameters()) / 1e9:.2f} B "
          f"parameters) in {seconds:.1f} s; torch threads {torch.get_num_threads()}")
    model = SimpleNamespace(name="wan", title="Wan 2.1 T2V 1.3B (random weights)", path=Path("wan-1.3b-random"),
                            dtype=torch.bfloat16, denoisers=("transformer",), transformer=tr)
    model.predict = lambda x, t, batch: tr(hidden_states=x, timestep=t.expand(1), return_dict=False, **batch)[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "wan13b_rank32.safetensors"
        save_file(build_lora(tr), str(path))
        print(f"LoRA file: {path.stat().st_size / 2**20:.1f} MiB")
        load_s, (view, report) = timed(lambda: load_lora(model, path, 1.0))
    print(f"Load LoRA (read + match): {load_s:.2f} s; {report.text()}")

    before = {n: (p, p.detach().clone()) for n, p in tr.named_parameters()}
    for i in range(2):
        with_patch = view.patched()
        enter_s, _ = timed(with_patch.__enter__)
        exit_s, _ = timed(lambda: with_patch.__exit__(None, None, None))
        print(f"patch {'(first: computes the swapped small parameters)' if i == 0 else '(again)':46} "
              f"{enter_s * 1e3:8.1f} ms   un-patch {exit_s * 1e3:7.1f} ms")
    exact = all(p is tr.get_parameter(n) and torch.equal(p, saved) for n, (p, saved) in before.items())
    print(f"after un-patching every weight is the same tensor with the same bits: {exact}")
    del before

    linears = [(tr.get_submodule(p.module), p.change) for p in view.loras[0].patches if p.leaf == "weight"
               and isinstance(tr.get_submodule(p.module), torch.nn.Linear)]

    def merge():
        backups = []
        with torch.no_grad():
            for m, ch in linears:
                backups.append(m.weight.detach().clone())
                m.weight += (ch.scale * (ch.up.float() @ ch.down.float())).to(m.weight.dtype)
        return backups

    def unmerge(backups):
        with torch.no_grad():
            for (m, _), b in zip(linears, backups):
                m.weight.copy_(b)

    merge_s, backups = timed(merge)
    unmerge_s, _ = timed(lambda: unmerge(backups))
    del backups
    print(f"for comparison, merging the {len(linears)} pairs into the bf16 weights (with backups): {merge_s:.2f} s, "
          f"restoring: {unmerge_s:.2f} s")

    side = max(1, int(args.tokens ** 0.5))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 16, 1, 2 * side, 2 * side, generator=g).bfloat16()        # (B, C, f, h, w): side^2 tokens
    batch = {"encoder_hidden_states": torch.randn(1, 512, 4096, generator=g).bfloat16()}
    t = torch.tensor(500.0)
    runs: dict[str, list[float]] = {"base": [], "lora": []}
    with torch.no_grad():
        model.predict(x, t, batch)                                              # warm-up
        for _ in range(3):                                                      # alternated: a busy machine drifts
            s, base = timed(lambda: model.predict(x, t, batch))
            runs["base"].append(s)
            s, out = timed(lambda: view.predict(x, t, batch))
            runs["lora"].append(s)
    b, lo = min(runs["base"]), min(runs["lora"])
    print(f"forward at {side * side} tokens (+512 text tokens), best of 3 alternated: base {b:.2f} s, with the LoRA "
          f"{lo:.2f} s (x{lo / b:.3f}; all: base {runs['base']}, LoRA {runs['lora']}); the LoRA changed the output by "
          f"{(out.float() - base.float()).abs().mean():.4f} (mean abs)")


if __name__ == "__main__":
    main()
