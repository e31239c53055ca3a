"""gnj against PyTorch twins of the five references (tests/parity/harness.py): every model family
at a tiny size, float64, forward in eval and train mode (with the running statistics), input
gradient and every parameter gradient within 1e-10 relative. The fast set covers the models whose
fidelity bugs this harness was written to catch and the (tiny) MLPs; the rest is slow-marked
(docs/parity.md)."""

import pytest

torch = pytest.importorskip("torch")

from tests.parity import harness  # noqa: E402

CASES = [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.slow else [])
         for c in harness.CASES]


@pytest.mark.parametrize("case", CASES)
def test_gnj_matches_the_reference_twin(case):
    errors = harness.run_case(case)
    assert all(e <= harness.TOL for e in errors.values()), errors


@pytest.mark.slow
@pytest.mark.parametrize("name,option", [
    ("wrn_constnet BN (d7 k1)", {"projection_after_relu": False}),
    ("dense_cnn_depthwise (D4, 2 cells, wm 0.25)", {"link_sampler": "numpy"}),
    ("resnet56_lubana preact, no norm (d8 w4)", {"shortcut_reads_inplace_relu": False}),
    ("densenet_cifar no norm, leaky relu 0.3 (k2, 2-2-2)", {"concat_after_inplace_act": False}),
])
def test_the_harness_catches_the_old_behaviour(name, option):
    """gnj's behaviour before following the reference (kept as an option) is far from it."""
    case = next(c for c in harness.CASES if c.name == name)
    case = harness.Case(case.name, case.reference, {**case.model, **option}, case.twin,
                        case.input_shape)
    assert harness.run_case(case)["eval"] > 1e-2
