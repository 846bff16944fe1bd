/* A remote control for Debian's headless Chromium (playwright-core, no browser download), driven by
 * tests/support/segq_testlib.py's Browser over stdin/stdout: one JSON command per line in, one
 * JSON answer per line out ({"ok": true, "value": ...} or {"ok": false, "error": "..."}), so the
 * browser tests keep their logic (Redis, workers, the bridge, assertions) in Python.
 * Commands: launch {user_data_dir}, goto {url}, set_files {selector, files}, eval {expr},
 * wait_for {expr, timeout_ms}, reload {}, screenshot {path, selector?}, box {selector},
 * console {}, close {}. */
"use strict";
const readline = require("readline");
const { chromium } = require("playwright-core");

const CHROMIUM = process.env.SEGQ_CHROMIUM || "/usr/bin/chromium";
/* Without the background-networking flags Chromium's own connections are refused here, and
 * without --no-sandbox it cannot start as root in a container. */
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage", /* containers often give /dev/shm 64 MB: use /tmp instead */
];

let context = null;
let page = null;
const consoleLines = [];

async function run(cmd) {
  switch (cmd.cmd) {
    case "launch": {
      context = await chromium.launchPersistentContext(cmd.user_data_dir, {
        executablePath: CHROMIUM,
        headless: true,
        args: FLAGS,
        viewport: { width: cmd.width || 1400, height: cmd.height || 1000 },
        deviceScaleFactor: 1,
      });
      page = context.pages()[0] || (await context.newPage());
      page.on("console", (m) => consoleLines.push(m.type() + ": " + m.text()));
      page.on("pageerror", (e) => consoleLines.push("pageerror: " + e.message));
      return { version: context.browser() ? context.browser().version() : null };
    }
    case "goto":
      await page.goto(cmd.url, { waitUntil: "load", timeout: cmd.timeout_ms || 30000 });
      return page.url();
    case "set_files":
      await page.setInputFiles(cmd.selector, cmd.files);
      return true;
    case "eval":
      return await page.evaluate(cmd.expr);
    case "wait_for": {
      /* Polled from here: waitForFunction(string) evaluates with new Function(), which the
       * bridge's Content-Security-Policy (script-src 'self') rightly forbids in the page. */
      const deadline = Date.now() + (cmd.timeout_ms || 30000);
      for (;;) {
        let v = null;
        try {
          v = await page.evaluate(cmd.expr);
        } catch (e) {
          if (!/Execution context was destroyed|navigation/i.test(String(e))) throw e;
        }
        if (v) return v;
        if (Date.now() > deadline) throw new Error("timed out waiting for " + cmd.expr);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    case "reload":
      await page.reload({ waitUntil: "load", timeout: cmd.timeout_ms || 30000 });
      return true;
    case "screenshot":
      if (cmd.selector) await page.locator(cmd.selector).screenshot({ path: cmd.path });
      else await page.screenshot({ path: cmd.path, fullPage: !!cmd.full_page });
      return cmd.path;
    case "box":
      return await page.locator(cmd.selector).boundingBox();
    case "console":
      return consoleLines.slice();
    case "close":
      if (context) await context.close();
      context = page = null;
      return true;
    default:
      throw new Error("unknown command " + cmd.cmd);
  }
}

const rl = readline.createInterface({ input: process.stdin });
let chain = Promise.resolve();
rl.on("line", (line) => {
  chain = chain.then(async () => {
    let answer;
    try {
      answer = { ok: true, value: await run(JSON.parse(line)) };
    } catch (e) {
      answer = { ok: false, error: String((e && e.stack) || e) };
    }
    process.stdout.write(JSON.stringify(answer === undefined ? null : answer) + "\n");
  });
});
rl.on("close", () => {
  chain.then(async () => {
    if (context) await context.close().catch(() => {});
    process.exit(0);
  });
});
