"""multimodal-rewardbench metrics as a local `evaluate` module: `evaluate.load("<path to this folder>")`.

See eval/metric_module.py.
"""

# The module, not the class: evaluate takes the first Metric class it finds here.
from deltarubric.eval import metric_module


class MultimodalRewardBench(metric_module.BenchmarkMetric):
    benchmark = "multimodal-rewardbench"
