"""Imports point down only: cli -> vmm -> kvm -> hw -> arch (softkvm.errors is shared)."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "softkvm"
LAYERS = ["arch", "hw", "kvm", "vmm", "cli"]
# The VMM talks to the kernel only through its user ABI (trace: the tracepoints' records, as
# userspace reads tracefs; the userspace GIC emits into the same buffer).
VMM_MAY_USE_FROM_KVM = {"softkvm.kvm.api", "softkvm.kvm.uapi", "softkvm.kvm.errors",
                        "softkvm.kvm.kvm_run", "softkvm.kvm.one_reg", "softkvm.kvm.irq_line",
                        "softkvm.kvm.trace", "softkvm.kvm"}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "softkvm":
        return None
    return parts[1] if parts[1] in LAYERS else None


def imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
            found += [f"{node.module}.{a.name}" for a in node.names]
    return found


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path):
    rel = path.relative_to(SRC)
    own = rel.parts[0].removesuffix(".py")
    if own not in LAYERS:
        return
    for module in imports(path):
        target = layer_of(module)
        if target is None or target == own:
            continue
        assert LAYERS.index(target) < LAYERS.index(own), f"{rel} imports {module}"
        if own == "vmm" and target == "kvm" and module.count(".") >= 2:
            base = ".".join(module.split(".")[:3])
            assert base in VMM_MAY_USE_FROM_KVM or module in VMM_MAY_USE_FROM_KVM, \
                f"{rel} reaches into the kernel: {module}"
        assert not (own == "vmm" and target == "hw"), f"{rel} imports the silicon: {module}"
