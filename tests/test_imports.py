"""models/ never imports ComfyUI, the runner, the server or the nodes; the pack loads the way ComfyUI loads it."""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("comfy", "folder_paths", "comfy_api", "server", "execution", "nodes", "kinema.host", "kinema.nodes")


def test_models_source_has_no_host_imports():
    for path in (REPO / "models").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):    # `from .. import host` imports "..host"
                base = ("." * node.level) + (node.module or "")
                mods = [base] + [base + ("." if node.module else "") + a.name for a in node.names]
            else:
                continue
            for m in mods:
                assert not m.startswith(("comfy", "folder_paths")), f"{path}: imports {m}"
                assert not m.lstrip(".").startswith(("host", "nodes")) or not m.startswith(".."), f"{path}: {m}"
                assert not m.startswith(("kinema.host", "kinema.nodes")), f"{path}: imports {m}"


def test_runtime_never_imports_training_code():
    """training/ (Kinema-Tiny's data generators, checkers, training and evaluation) is not installed: nothing the
    pack runs may import it."""
    files = [REPO / "__init__.py", *(p for d in ("models", "nodes", "host") for p in (REPO / d).rglob("*.py"))]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""] + ([a.name for a in node.names] if node.level else [])
            else:
                continue
            assert not any(m.split(".")[0] == "training" or ".training" in m for m in mods), f"{path}: {mods}"


def test_models_import_with_comfyui_blocked():
    code = textwrap.dedent(f"""
        import sys, importlib, pkgutil
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('comfy', 'folder_paths', 'comfy_api', 'comfy_extras'):
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        import kinema.models, kinema.models.families, kinema.models.sampling, kinema.models.fixtures
        for m in pkgutil.walk_packages(kinema.models.__path__, 'kinema.models.'):
            importlib.import_module(m.name)
        bad = [m for m in sys.modules if m.startswith(('kinema.host',))]
        assert not bad, bad
        print('ok')
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_loads_like_comfyui_custom_node(tmp_path):
    """ComfyUI imports custom_nodes/<dir>/__init__.py by file location under the folder's own name."""
    pack = tmp_path / "custom_nodes" / "comfyui-kinema"
    pack.parent.mkdir()
    pack.symlink_to(REPO, target_is_directory=True)
    code = textwrap.dedent(f"""
        import importlib.util, sys
        path = {str(pack)!r}
        spec = importlib.util.spec_from_file_location('comfyui-kinema', path + '/__init__.py',
                                                      submodule_search_locations=[path])
        module = importlib.util.module_from_spec(spec)
        sys.modules['comfyui-kinema'] = module
        spec.loader.exec_module(module)
        assert len(module.NODE_CLASS_MAPPINGS) >= 8
        assert 'kinema' not in sys.modules, 'the pack must not import itself by name'
        import torch
        assert not torch.cuda.is_initialized()
        print('ok', len(module.NODE_CLASS_MAPPINGS))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
