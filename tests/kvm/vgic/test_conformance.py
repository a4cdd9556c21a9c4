"""The CPU-interface conformance scenarios against the in-kernel vGIC (GICv2 and GICv3 models)."""

import pytest

from tests.kvm.vgic.conformance import SCENARIOS, KernelVgic, run

CASES = [pytest.param(scenario, model, id=f"{model}-{scenario.name}")
         for scenario in SCENARIOS for model in scenario.models]


@pytest.mark.parametrize("scenario,model", CASES)
def test_scenario(scenario, model):
    run(scenario, KernelVgic(model, scenario.nr_vcpus))


@pytest.mark.parametrize("model", ["v2", "v3"])
@pytest.mark.parametrize("nr_lr", [2, 3, 4])
def test_overflow_scenario_with_few_list_registers(model, nr_lr):
    """The LR refill path must deliver everything whatever the number of LRs."""
    scenario = next(s for s in SCENARIOS if s.name.startswith("more pending than list"))
    gic = KernelVgic(model, scenario.nr_vcpus, nr_lr=nr_lr)
    run(scenario, gic)
    assert gic.exits > 0
