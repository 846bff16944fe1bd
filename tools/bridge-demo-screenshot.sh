#!/usr/bin/env bash
# Regenerates docs/bridge-demo.png, the README's picture of the demo page: the final page of
# tests/browser/test_demo_page.py's reload test (headless Chromium, a real worker and bridge, the
# 10 first samples/ images through cellseg-unet). Needs the build in $SEGQ_BUILD_DIR (default
# build/) and tests/browser/node_modules (tools/bootstrap.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export SEGQ_SOURCE_DIR="$PWD" SEGQ_BUILD_DIR="${SEGQ_BUILD_DIR:-$PWD/build}"
export PYTHONPATH="$PWD/clients/python:$PWD/tests/support"
SEGQ_DEMO_SCREENSHOT="$PWD/docs/bridge-demo.png" \
  /usr/bin/python3 tests/browser/test_demo_page.py DemoPage.test_reload_mid_run
# A 256-colour palette keeps the picture a fraction of the size, with no visible difference.
/usr/bin/python3 -c 'from PIL import Image; im = Image.open("docs/bridge-demo.png").convert("RGB"); im.quantize(256, method=Image.Quantize.FASTOCTREE).save("docs/bridge-demo.png", optimize=True)'
echo "wrote docs/bridge-demo.png"
