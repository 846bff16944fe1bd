#!/usr/bin/python3
"""The npm lockfiles of the benchmark peers (bench/bullmq, tests/ort) are in sync with their
package.json, as `npm ci` from a clean clone needs (issue 9 item 8: bench/bullmq's lockfile lacked
msgpackr-extract's optional per-platform packages, so `npm ci` refused to install). Checked
offline: every dependency of package.json and every dependency or optional dependency of a locked
package has its own entry in the lockfile."""
import json
import os
import sys
import unittest

SRC = os.environ.get("SEGQ_SOURCE_DIR",
                     os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DIRS = [os.path.join(SRC, "bench", "bullmq"), os.path.join(SRC, "tests", "ort")]


def resolve(packages, where, name):
    """The lockfile entry npm would use for `name` required from package path `where`."""
    path = where
    while True:
        key = (path + "/" if path else "") + "node_modules/" + name
        if key in packages:
            return key
        if not path:
            return None
        # Up one node_modules level: "node_modules/a/node_modules/b" -> "node_modules/a".
        cut = path.rfind("/node_modules/")
        path = path[:cut] if cut >= 0 else ""


class Lockfiles(unittest.TestCase):
    def test_in_sync(self):
        for d in DIRS:
            with self.subTest(d=d):
                with open(os.path.join(d, "package.json")) as f:
                    pkg = json.load(f)
                with open(os.path.join(d, "package-lock.json")) as f:
                    lock = json.load(f)
                self.assertGreaterEqual(lock.get("lockfileVersion", 0), 2)
                packages = lock["packages"]
                root = packages[""]
                for kind in ("dependencies", "devDependencies", "optionalDependencies"):
                    self.assertEqual(root.get(kind, {}), pkg.get(kind, {}), "%s: %s differ" % (d, kind))
                missing = []
                for where, entry in packages.items():
                    for kind in ("dependencies", "optionalDependencies", "peerDependencies"):
                        for name in entry.get(kind, {}):
                            if kind == "peerDependencies" and entry.get("peerDependenciesMeta", {}).get(
                                    name, {}).get("optional"):
                                continue
                            if resolve(packages, where, name) is None:
                                missing.append("%s -> %s (%s)" % (where or "(root)", name, kind))
                self.assertEqual(missing, [], d)


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(1 if result.failures or result.errors else 0)
