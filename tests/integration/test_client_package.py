#!/usr/bin/python3
"""The Python client as a package (issue 12 item 6): the README's install commands, run as
written in a scratch folder holding a copy of clients/python (its links to queue/scripts and
common/common.h made absolute, so the build must follow them), install segq into a venv with
Debian's site packages; the installed package is imported from outside the source tree (its
scripts are its own copies, byte for byte the repository's), declares its dependencies and
extras, is typed, and has the `segq` command. Then the README's Python snippet and the first
snippets of docs/clients.md run as written with that venv's interpreter (and the README's with
/usr/bin/python3 + PYTHONPATH, the other interpreter it names) against a real redis-server and a
real worker serving otsu and cellseg-unet."""
import os
import re
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()
try:
    import setuptools  # noqa: F401
    import wheel  # noqa: F401
except ImportError as e:  # pragma: no cover
    tl.skip("needs python3-setuptools and python3-wheel (tools/bootstrap.sh): %s" % e)

import segq  # noqa: E402  (the source tree's, to compare with the installed copy)

PKG = os.path.join(tl.SOURCE_DIR, "clients", "python")


def blocks(path, heading, lang):
    """The ```lang blocks of the section of path that starts with heading."""
    with open(path) as f:
        text = f.read()
    start = text.index("\n" + heading + "\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else len(text)]
    return re.findall(r"```%s\n(.*?)```" % lang, section, re.S)


def run(argv, cwd, env=None, timeout=300):
    e = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    e.update(env or {})
    p = subprocess.run(argv, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


class Package(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tl.tempdir("segq-pkg-")
        # The scratch checkout: clients/python copied with its links pointing at the real
        # targets (the build follows them), and the samples the snippets read.
        dst = os.path.join(cls.tmp, "clients", "python")
        shutil.copytree(PKG, dst, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        for name in ("scripts", "common.h"):
            link = os.path.join(dst, "segq", name)
            target = os.path.realpath(os.path.join(PKG, "segq", name))
            os.remove(link)
            os.symlink(target, link)
        os.symlink(os.path.join(tl.SOURCE_DIR, "samples"), os.path.join(cls.tmp, "samples"))
        sh = blocks(os.path.join(tl.SOURCE_DIR, "README.md"), "## Python client", "sh")
        assert sh, "README.md: no sh block under ## Python client"
        cls.install = run(["bash", "-euc", sh[0]], cwd=cls.tmp)
        cls.py = os.path.join(cls.tmp, ".venv", "bin", "python")
        cls.rs = tl.RedisServer()
        cls.w = tl.Worker(cls.rs.url, worker_id="pkg-w1", models="otsu,cellseg-unet")
        cls.w.wait_ready(cls.rs.client(), timeout=120)

    @classmethod
    def tearDownClass(cls):
        cls.w.stop()
        cls.rs.stop()

    def test_1_installed_outside_the_tree(self):
        rc, so, se = self.install
        self.assertEqual(rc, 0, so + se)
        self.assertIn("Successfully installed segq", so)
        code = ("import importlib.metadata as md, os, segq, segq.aio\n"
                "d = os.path.dirname(segq.__file__)\n"
                "print(d)\n"
                "print(segq.load_script('claim').hex())\n"
                "print(md.version('segq'), md.requires('segq'))\n"
                "print(md.metadata('segq').get_all('Provides-Extra'))\n"
                "print(os.path.isfile(os.path.join(d, 'py.typed')), os.path.islink(os.path.join(d, 'scripts')))\n"
                "print(len(segq.schema.ERRORS), segq.AsyncClient.__name__)\n")
        rc, so, se = run([self.py, "-c", code], cwd=self.tmp)
        self.assertEqual(rc, 0, se)
        where, claim, meta, extras, files, errors = so.splitlines()
        self.assertTrue(where.startswith(os.path.join(self.tmp, ".venv")), where)
        self.assertFalse(where.startswith(tl.SOURCE_DIR), where)
        self.assertEqual(bytes.fromhex(claim), segq.load_script("claim"), "scripts copied as they are")
        self.assertTrue(meta.startswith(segq.__version__ + " "), meta)
        for dep in ("redis", "msgpack", "numpy", "Pillow", "tifffile"):
            self.assertIn(dep, meta)
        self.assertIn("images", extras)
        self.assertEqual(files, "True False", "py.typed shipped; scripts a real folder, not a link")
        self.assertEqual(errors, "%d AsyncClient" % len(segq.schema.ERRORS))
        rc, so, se = run([os.path.join(self.tmp, ".venv", "bin", "segq"), "stats"], cwd=self.tmp,
                         env={"SEGQ_REDIS_URL": self.rs.url})
        self.assertEqual(rc, 0, se)
        self.assertIn("pkg-w1", so)

    def snippet(self, code, argv, env=None):
        rc, so, se = run(argv + ["-c", code], cwd=self.tmp,
                         env=dict({"SEGQ_REDIS_URL": self.rs.url}, **(env or {})))
        self.assertEqual(rc, 0, "snippet failed:\n%s\n--- stdout\n%s\n--- stderr\n%s" % (code, so, se))
        return so

    def test_2_readme_snippet(self):
        code = blocks(os.path.join(tl.SOURCE_DIR, "README.md"), "## Python client", "python")[0]
        for argv, env in (([self.py], None),
                          (["/usr/bin/python3"], {"PYTHONPATH": os.path.join(tl.SOURCE_DIR, "clients", "python")})):
            so = self.snippet(code, argv, env)
            self.assertRegex(so, r"^ok \d+ objects", argv)
            self.assertIn("of 2", so, "the group's events")
            # canceled, running, or already done: a race with the worker, each answer valid
            self.assertRegex(so, r"\{'[0-9a-f]{32}': [012]\}", "the cancel's answer")

    def test_3_clients_md_snippets(self):
        doc = os.path.join(tl.SOURCE_DIR, "docs", "clients.md")
        so = self.snippet(blocks(doc, "## Client", "python")[0], [self.py])
        self.assertRegex(so, r"^\d+ objects")
        so = self.snippet(blocks(doc, "## AsyncClient", "python")[0], [self.py])
        lines = so.splitlines()
        self.assertRegex(lines[0], r"^\[\d+, \d+, \d+\]$")
        self.assertIn("resync", lines[1:], "a new reader of a finished job gets its snapshot")


if __name__ == "__main__":
    tl.run_tests()
