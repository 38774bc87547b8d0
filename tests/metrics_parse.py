"""Parses an OpenMetrics exposition (the body of /metrics) with prometheus_client's parser and
prints each sample as `name{labels} value`, sorted; exits 1 when the text does not parse, a family
has no help text, or a name breaks the conventions (the exoflow_ prefix, histograms in seconds)."""

import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    samples = []
    for family in text_string_to_metric_families(text):
        if not family.documentation:
            raise SystemExit(f"{family.name} has no help text")
        if not family.name.startswith("exoflow_"):
            raise SystemExit(f"{family.name} does not start with exoflow_")
        # Prometheus conventions: a histogram of time is in seconds and says so in its name.
        if family.type == "histogram" and not family.name.endswith("_seconds"):
            raise SystemExit(f"{family.name} is a histogram without a unit in its name")
        if family.name.endswith("_seconds") and family.unit != "seconds":
            raise SystemExit(f"{family.name} does not declare its unit")
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples.append(f"{sample.name}{{{labels}}} {sample.value:g}")
    print("\n".join(sorted(samples)))


if __name__ == "__main__":
    main(sys.argv[1])
