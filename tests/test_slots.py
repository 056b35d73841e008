"""What a slot's registration carries, and how far one registration reaches: a gate registered with
nothing else is an arm of the gate study, a line of ``senet studies``, a trial of a sweep's plan,
a config choice and a histogram range of the analysis, and its missing golden entry fails nothing."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from ablations.studies import STUDIES, base_config
from ablations.sweep import SweepOptions, plan
from analysis.extract import DEFAULT_RANGE, ExcitationAccumulator, attach
from senet import config
from senet.cli import main as senet_main
from senet.models import build_model, se_modules
from senet.models.blocks import BasicBlock
from senet.models.resnet import ResNet
from senet.registry import Registry
from senet.se import (
    ACTIVATIONS,
    EXCITATIONS,
    GATES,
    PLACEMENTS,
    SQUEEZES,
    GateInfo,
    SEConfig,
    SEPlan,
    SqueezeExcitation,
    study_choices,
)
from tests import golden, test_models

pytestmark = pytest.mark.usefixtures("one_thread")

SLOT_STUDIES = {"gate": (GATES, "se.gate"), "squeeze": (SQUEEZES, "se.squeeze"),
                "placement": (PLACEMENTS, "se.placement")}


class HalfTanh(nn.Module):
    """A gate in (-1/2, 1/2): what a user would write to try one."""

    def forward(self, x):
        return torch.tanh(x) / 2


@pytest.fixture
def new_gate():
    """A gate registered for one test only, with its range and nothing else."""
    with GATES.registered("half_tanh", HalfTanh, range=(-0.5, 0.5)):
        yield "half_tanh"
    assert "half_tanh" not in GATES


def test_a_new_gate_is_an_arm_of_the_gate_study(new_gate):
    study = STUDIES.get("gate")
    arms = study.resolve_arms(base_config(study, "smoke"))
    assert [a.label for a in arms] == study_choices(GATES) and arms[-1].label == new_gate
    assert dict(arms[-1].overrides) == {"se.gate": new_gate} and arms[-1].paper_top1 is None


def test_a_new_gate_is_listed_by_senet_studies(new_gate, capsys):
    assert senet_main(["studies"]) == 0
    out = capsys.readouterr().out
    gate_block = out.split("\ngate:")[1].split("\nplacement:")[0]
    assert f"  {new_gate} " in gate_block and f"se.gate={new_gate}" in gate_block


def test_a_new_gate_is_planned_by_a_sweep(new_gate, tmp_path, capsys):
    p = plan(SweepOptions(study="gate", preset="smoke", results=str(tmp_path)))
    assert [c.arm for c in p.cells] == study_choices(GATES)
    assert senet_main(["sweep", "gate", "--preset", "smoke", "--dry-run", "--results", str(tmp_path)]) == 0
    assert f"({len(study_choices(GATES))} arms × 1 seeds)" in capsys.readouterr().out


def test_a_new_gate_is_a_config_choice_and_trains(new_gate):
    cfg = config.from_flat({"se.gate": new_gate, "model.name": "se_resnet20"})
    assert new_gate in config.choices()["se.gate"]
    model = build_model("se_resnet20", num_classes=3, in_chans=1, se=cfg.se)
    model(torch.randn(2, 1, 16, 16)).square().mean().backward()
    assert all(isinstance(m.gate, HalfTanh) for m in se_modules(model).values())


def test_a_new_gate_sets_the_analysis_histogram_range(new_gate):
    model = build_model("se_resnet20", num_classes=3, in_chans=1, se=SEConfig(gate=new_gate)).eval()
    acc = ExcitationAccumulator(3)
    handles, _ = attach(model, acc, ["SE_2_1", "SE_4_3"], torch.device("cpu"))
    for h in handles:
        h.remove()
    assert {(b.lo, b.hi) for b in acc.blocks.values()} == {(-0.5, 0.5)}


def test_a_new_gate_without_a_golden_entry_fails_nothing(new_gate):
    assert f"se_resnet20 se.gate={new_gate}" in golden.expected_keys()["variants"]
    with pytest.raises(pytest.skip.Exception, match=f"se.gate={new_gate}"):
        test_models.test_golden_entries_are_all_still_registered("variants")


# --------------------------------------------------------------------------------------------
# What the registered choices declare
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gate", GATES.names())
def test_analysis_bins_each_gate_over_its_range_within_the_window(gate):
    model = build_model("se_resnet20", num_classes=3, in_chans=1, se=SEConfig(gate=gate)).eval()
    acc = ExcitationAccumulator(3)
    for h in attach(model, acc, ["SE_2_1"], torch.device("cpu"))[0]:
        h.remove()
    lo, hi = GATES.info(gate).range
    assert (acc.blocks["SE_2_1"].lo, acc.blocks["SE_2_1"].hi) == (max(lo, DEFAULT_RANGE[0]), min(hi, DEFAULT_RANGE[1]))


def test_a_custom_callable_gate_gets_the_default_window():
    plan = SEPlan.make(lambda c: SqueezeExcitation(c, 4, gate=HalfTanh))
    model = ResNet(BasicBlock, (1, 1), (4, 8), stem="cifar", stem_width=4, shortcut="pad", num_classes=3,
                   se=plan).eval()
    acc = ExcitationAccumulator(3)
    for h in attach(model, acc, ["SE_2_1"], torch.device("cpu"))[0]:
        h.remove()
    assert se_modules(model)["SE_2_1"].gate_name == "HalfTanh" and "HalfTanh" not in GATES
    assert (acc.blocks["SE_2_1"].lo, acc.blocks["SE_2_1"].hi) == DEFAULT_RANGE


def test_gates_must_declare_their_range():
    with pytest.raises(TypeError, match="gate 'nameless'.*range"):
        GATES.add("nameless", nn.Sigmoid)
    assert "nameless" not in GATES
    assert GATES.info("relu").range == (0.0, math.inf) and isinstance(GATES.info("tanh"), GateInfo)


@pytest.mark.parametrize("study", sorted(SLOT_STUDIES))
def test_slot_studies_take_every_registered_choice_with_its_papers_numbers(study):
    registry, key = SLOT_STUDIES[study]
    arms = STUDIES.get(study).arms
    assert [a.label for a in arms] == study_choices(registry)
    for a in arms:
        assert dict(a.overrides) == {key: a.label}
        assert (a.paper_top1, a.paper_top5) == (registry.info(a.label).paper or (None, None))


@pytest.mark.parametrize("registry", [SQUEEZES, EXCITATIONS, ACTIVATIONS, GATES, PLACEMENTS],
                         ids=lambda r: r.kind)
def test_each_se_config_field_names_its_slots_registry(registry):
    named = [f.metadata.get("choices") for f in dataclasses.fields(SEConfig)]
    assert isinstance(registry, Registry) and any(r is registry for r in named)
