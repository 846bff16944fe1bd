"""Scraping a worker's /metrics the way Prometheus does: an HTTP GET, then prometheus_client's
own text parser (python3-prometheus-client), never a regular expression of ours. Shared by the
metrics test and the dashboard/alert checks (tests/deploy)."""
import urllib.request

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # pragma: no cover - Debian's python3-prometheus-client missing
    text_string_to_metric_families = None


def available():
    return text_string_to_metric_families is not None


def scrape_text(port, host="127.0.0.1", timeout=10):
    """(content type, body) of GET /metrics."""
    with urllib.request.urlopen("http://%s:%d/metrics" % (host, port), timeout=timeout) as r:
        return r.headers.get("Content-Type", ""), r.read().decode("utf-8")


def parse(text):
    """{family name: Metric} as prometheus_client parses the text (raises on a malformed line)."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def scrape(port, host="127.0.0.1"):
    return parse(scrape_text(port, host)[1])


def value(families, family, sample=None, **labels):
    """The value of the one sample of `family` (sample name defaults to the family's, counters
    get _total) whose labels include `labels`; None when there is none."""
    f = families.get(family)
    if f is None:
        return None
    for s in f.samples:
        if sample is not None and s.name != sample:
            continue
        if sample is None and s.name not in (family, family + "_total"):
            continue
        if all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def sample_names(families):
    """Every sample name in a scrape (with _total, _bucket, _sum, _count suffixes)."""
    return {s.name for f in families.values() for s in f.samples}
