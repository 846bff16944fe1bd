#!/usr/bin/python3
"""update_docs: rewrites the generated parts of the docs from the binaries, so they are never
pasted: the option table of docs/operations.md comes from `segq-worker --help-markdown` (itself
generated from SQ_WORKER_OPTIONS in worker/config.h) and its metric list from `segq-worker
--help-metrics` (SQ_METRIC_FAMILIES in worker/metrics.h). A generated block sits between
    <!-- BEGIN generated: segq-worker --help-markdown -->
    <!-- END generated -->
and is replaced whole.

    /usr/bin/python3 tools/update_docs.py [--worker build/worker/segq-worker]      # rewrite
    /usr/bin/python3 tools/update_docs.py --check                                  # exit 1 if stale

tests/unit/test_docs_generated.py runs --check, so an option added to the table without this
step fails the suite with the command to run."""
import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKS = [  # (doc, command after "BEGIN generated: ", argv)
    ("docs/operations.md", "segq-worker --help-markdown", ["{worker}", "--help-markdown"]),
    ("docs/operations.md", "segq-worker --help-metrics", ["{worker}", "--help-metrics"]),
]
BEGIN = "<!-- BEGIN generated: %s -->"
END = "<!-- END generated -->"


def render(doc_text, what, content):
    rx = re.compile(r"(%s\n)(.*?)(%s)" % (re.escape(BEGIN % what), re.escape(END)), re.S)
    if not rx.search(doc_text):
        raise SystemExit("update_docs: no generated block for %r" % what)
    return rx.sub(lambda m: m.group(1) + content.rstrip("\n") + "\n" + m.group(3), doc_text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", default=os.environ.get("SEGQ_WORKER_BIN")
                    or os.path.join(ROOT, "build", "worker", "segq-worker"))
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    a = ap.parse_args(argv)
    stale = []
    for doc, what, argv_t in BLOCKS:
        cmd = [x.format(worker=a.worker) for x in argv_t]
        content = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        path = os.path.join(ROOT, doc)
        with open(path) as f:
            old = f.read()
        new = render(old, what, content)
        if new != old:
            stale.append(doc)
            if not a.check:
                with open(path, "w") as f:
                    f.write(new)
    if stale and a.check:
        print("stale generated docs: %s; run /usr/bin/python3 tools/update_docs.py" % ", ".join(stale))
        return 1
    if stale:
        print("updated %s" % ", ".join(stale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
