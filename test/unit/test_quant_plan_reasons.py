"""The reason written for each float node quotes the search step that justifies it (plan.float_reasons)."""

from bev_quant_ros.quant.plan import SearchStep, float_reasons
from bev_quant_ros.quant.sensitivity import NodeSensitivity


def _step(nodes: str, drop: float) -> SearchStep:
    return SearchStep(list(nodes), drop, {}, "day")


def test_reasons_quote_the_exact_trial_or_say_it_had_more_nodes_float():
    # greedy adds a, b, c, d (budget 0.005); prune tries d, c, b, a: c and a go, b and d stay
    steps = [_step("", 0.030), _step("a", 0.020), _step("ab", 0.012), _step("abc", 0.008), _step("abcd", 0.002),
             _step("abc", 0.009), _step("abd", 0.004), _step("ad", 0.011), _step("bd", 0.003), _step("b", 0.014)]
    sensitivity = [NodeSensitivity(n, "Conv", 0.01, 0.1, 0.2) for n in "abcd"]
    reasons = {f.node: f.reason for f in float_reasons(["b", "d"], sensitivity, steps, "FP32 detections >= 0.3")}
    # b: plan minus b = {d} was never measured; its prune trial {a, d} had one more node float
    assert "NDS drop 1.10 points (measured with 1 more node(s) float) (plan: 0.30)" in reasons["b"]
    # d: {b} was measured exactly (a later step)
    assert "NDS drop 1.40 points (plan: 0.30); NDS vs FP32 detections >= 0.3" in reasons["d"]
