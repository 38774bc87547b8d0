"""Parses an OpenMetrics exposition (the body of /metrics) with prometheus_client's parser and
prints each sample as `name{labels} value`, sorted; exits 1 when the text does not parse."""

import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    samples = []
    for family in text_string_to_metric_families(text):
        if not family.documentation:
            raise SystemExit(f"{family.name} has no help text")
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples.append(f"{sample.name}{{{labels}}} {sample.value:g}")
    print("\n".join(sorted(samples)))


if __name__ == "__main__":
    main(sys.argv[1])
