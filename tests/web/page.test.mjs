// Browser test of the page senti serves at GET / (crates/http/src/ui/index.html).
//
// Drives Debian's headless Chromium through playwright-core against a running server:
//   SENTI_URL=http://127.0.0.1:18080 node --test tests/web/page.test.mjs
// tests/web/run.sh does the whole thing (installs Chromium, starts `senti serve`, runs this).
// Optional: CHROMIUM=/path/to/chromium (default /usr/bin/chromium).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const BASE = (process.env.SENTI_URL || "").replace(/\/+$/, "");
if (!/^https?:\/\/[^/]+$/.test(BASE)) {
  throw new Error("set SENTI_URL to the server's base URL, e.g. SENTI_URL=http://127.0.0.1:18080");
}
const SAME_ORIGIN = BASE + "/"; // the trailing slash keeps :1808 from matching :18080
const SCREENSHOT = join(dirname(fileURLToPath(import.meta.url)), "screenshot.png");
const CLUSTER_SCREENSHOT = join(dirname(fileURLToPath(import.meta.url)), "cluster.png");
const POSITIVE = "这家酒店非常好，服务周到";
const NEGATIVE = "太差了，再也不会来了";
// Inference shares 2 cores with whatever else runs: be patient, but not forever.
const WAIT_MS = 60_000;

let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // Playwright adds a fresh temporary --user-data-dir of its own and removes it on close.
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
});

/** A fresh context and page that records every request, console error and page error. */
async function openPage(path = "") {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const seen = { requests: [], consoleErrors: [], pageErrors: [] };
  page.on("request", (req) => seen.requests.push(req));
  page.on("console", (msg) => { if (msg.type() === "error") seen.consoleErrors.push(msg.text()); });
  page.on("pageerror", (err) => seen.pageErrors.push(String(err)));
  const response = await page.goto(SAME_ORIGIN + path, { waitUntil: path ? "load" : "networkidle" });
  assert.equal(response.status(), 200, `GET /${path} answers 200`);
  return { context, page, seen };
}

function assertOnlySameOrigin(seen) {
  const foreign = seen.requests.map((r) => r.url()).filter((url) => !url.startsWith(SAME_ORIGIN));
  assert.deepEqual(foreign, [], `the page requested other hosts than ${BASE}`);
}

const classifyRequests = (seen) =>
  seen.requests.filter((r) => r.method() === "POST" && r.url() === SAME_ORIGIN + "v1/classify");

test("(a) the page loads only from the server, without console errors", async () => {
  const { context, page, seen } = await openPage();
  try {
    assert.match(await page.title(), /senti/);
    assert.equal(await page.getAttribute("html", "lang"), "zh");
    for (const id of ["#input", "#submit", "#results", "#latency", "#model"]) {
      assert.equal(await page.locator(id).count(), 1, `${id} exists`);
    }
    assert.ok(await page.isVisible("#input"));
    assert.ok(await page.isVisible("#submit"));
    assert.ok(await page.isHidden("#error"), "no error box before any request");
    assert.equal(await page.getAttribute("#error", "role"), "alert");
    // The textarea has a label.
    assert.equal(await page.locator('label[for="input"]').count(), 1);
    assert.ok(seen.requests.length >= 1, "the page request itself was recorded");
    assertOnlySameOrigin(seen);
    assert.deepEqual(seen.consoleErrors, []);
    assert.deepEqual(seen.pageErrors, []);
  } finally {
    await context.close();
  }
});

test("(b) two lines give a positive and a negative row, latency and model", async () => {
  const { context, page, seen } = await openPage();
  try {
    await page.fill("#input", `${POSITIVE}\n\n${NEGATIVE}\n`);
    const replied = page.waitForResponse((r) => r.url() === SAME_ORIGIN + "v1/classify");
    await page.click("#submit");
    const reply = await replied;
    assert.equal(reply.status(), 200, `POST /v1/classify answered ${reply.status()}: ${await reply.text()}`);
    const body = await reply.json();

    const rows = page.locator("#results .result");
    await rows.nth(1).waitFor();
    assert.equal(await rows.count(), 2, "one row per non-blank line");

    // What went over the wire: one JSON request with the two texts, blank lines dropped.
    const sent = classifyRequests(seen);
    assert.equal(sent.length, 1);
    assert.match(sent[0].headers()["content-type"], /^application\/json/);
    assert.deepEqual(sent[0].postDataJSON(), { texts: [POSITIVE, NEGATIVE] });

    const labels = [await rows.nth(0).getAttribute("data-label"), await rows.nth(1).getAttribute("data-label")];
    for (const [i, row] of [rows.nth(0), rows.nth(1)].entries()) {
      const score = Number(await row.getAttribute("data-score"));
      assert.ok(score >= 0 && score <= 1, `row ${i} data-score ${score} is a probability`);
      assert.ok((await row.textContent()).includes(i === 0 ? POSITIVE : NEGATIVE), `row ${i} shows its text`);
    }
    assert.deepEqual(labels, ["positive", "negative"], "the model labels the two example sentences correctly");
    assert.match(await rows.nth(0).textContent(), /正面/);
    assert.match(await rows.nth(1).textContent(), /负面/);

    assert.match(await page.textContent("#latency"), /\d+(\.\d+)?\s*ms/);
    assert.ok(body.model?.name, "the server names its model");
    const model = await page.textContent("#model");
    assert.ok(model.includes(body.model.name), `#model (${model}) shows the model name ${body.model.name}`);
    assert.ok(model.includes(body.model.version) && model.includes(body.model.variant), "and its version and variant");

    assert.ok(await page.isHidden("#error"));
    assertOnlySameOrigin(seen);
    assert.deepEqual(seen.consoleErrors, []);
    assert.deepEqual(seen.pageErrors, []);
  } finally {
    await context.close();
  }
});

test("(c) a 5000-character text shows the text_too_long error box", async () => {
  const { context, page, seen } = await openPage();
  try {
    await page.fill("#input", "好".repeat(5000));
    await page.click("#submit");
    const box = page.locator("#error");
    await box.waitFor({ state: "visible" });
    assert.equal(await box.getAttribute("role"), "alert");
    const text = await box.textContent();
    assert.match(text, /text_too_long/);
    assert.match(text, /5000/, "the server's message is shown");
    assert.equal(await page.locator("#results .result").count(), 0);
    assertOnlySameOrigin(seen);
    // Chromium itself logs the 422 as "Failed to load resource"; nothing else may be logged.
    assert.deepEqual(seen.consoleErrors.filter((m) => !/Failed to load resource.*422/.test(m)), []);
    assert.deepEqual(seen.pageErrors, []);
  } finally {
    await context.close();
  }
});

test("(d) screenshot for a human: tests/web/screenshot.png", async () => {
  const { context, page, seen } = await openPage();
  try {
    const lines = [POSITIVE, NEGATIVE, "房间干净，早餐也很丰富，下次还来", "等了一个小时才上菜，服务员态度很差"];
    await page.fill("#input", lines.join("\n"));
    await page.click("#submit");
    await page.locator("#results .result").nth(lines.length - 1).waitFor();
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    assert.ok(statSync(SCREENSHOT).size > 1000, "the screenshot was written");
    assertOnlySameOrigin(seen);
  } finally {
    await context.close();
  }
});

test("(e) Ctrl+Enter sends more than 64 lines in requests of at most 64 texts", async () => {
  const { context, page, seen } = await openPage();
  try {
    const lines = Array.from({ length: 65 }, (_, i) => `${i % 2 ? NEGATIVE : POSITIVE} #${i}`);
    await page.fill("#input", lines.join("\r\n")); // Windows line ends: the \r is dropped
    await page.press("#input", "Control+Enter"); // the keyboard shortcut submits too
    await page.locator("#results .result").nth(64).waitFor();
    assert.equal(await page.locator("#results .result").count(), 65);
    const sent = classifyRequests(seen).map((r) => r.postDataJSON().texts);
    assert.deepEqual(sent, [lines.slice(0, 64), lines.slice(64)]);
    assert.ok(await page.isHidden("#error"));
    assertOnlySameOrigin(seen);
  } finally {
    await context.close();
  }
});

test("(f) a 401 missing_token asks for a bearer token and sends it next time", async () => {
  const { context, page, seen } = await openPage();
  try {
    // The server under test runs without tokens, so its first answer is replaced by the 401
    // that senti gives when `auth.tokens` is set (crates/http/src/error.rs); later requests
    // go through to the real server, which ignores the header when auth is off.
    let refused = false;
    await page.route(SAME_ORIGIN + "v1/classify", async (route) => {
      if (refused) return route.continue();
      refused = true;
      await route.fulfill({
        status: 401,
        contentType: "application/json",
        headers: { "www-authenticate": "Bearer" },
        body: JSON.stringify({ error: { code: "missing_token", message: "this server requires `Authorization: Bearer <token>`" } }),
      });
    });
    assert.ok(await page.isHidden("#token"), "no token field until the server asks");
    await page.fill("#input", POSITIVE);
    await page.click("#submit");
    await page.locator("#error").waitFor({ state: "visible" });
    assert.match(await page.textContent("#error"), /missing_token/);
    await page.locator("#token").waitFor({ state: "visible" });
    assert.equal(await page.getAttribute("#token", "type"), "password");

    await page.fill("#token", "s3cret-token");
    await page.click("#submit");
    await page.locator("#results .result").first().waitFor();
    const sent = classifyRequests(seen);
    assert.equal(sent.length, 2);
    assert.equal(sent[0].headers().authorization, undefined);
    assert.equal(sent[1].headers().authorization, "Bearer s3cret-token");
    assert.ok(await page.isHidden("#error"));
    assert.equal(await page.evaluate(() => sessionStorage.getItem("senti.token")), "s3cret-token");
    assertOnlySameOrigin(seen);
  } finally {
    await context.close();
  }
});

test("(g) the cluster page shows actors, traffic and recent errors, refreshed live", async () => {
  // /cluster polls GET /v1/cluster every second (its own connection: no networkidle wait).
  const { context, page, seen } = await openPage("cluster");
  try {
    assert.match(await page.title(), /senti/);
    await page.locator('#live[data-state="live"]').waitFor();
    const view = await (await fetch(BASE + "/v1/cluster")).json();
    assert.equal(await page.textContent("#node"), view.node_id);
    // The server of run.sh runs alone: one member row, and a row per local actor.
    assert.match(await page.textContent("#members tbody"), new RegExp(view.node_id));
    assert.equal(await page.locator("#targets tbody tr").count(), view.routing.targets.length);
    assert.match(await page.textContent("#targets tbody"), /本地 local/);

    // A refused and an answered request: the next refreshes show the error and the traffic.
    const refused = await page.evaluate(async () => {
      const res = await fetch("/v1/classify", { method: "POST", headers: { "Content-Type": "application/json" }, body: '{"texts": []}' });
      return { status: res.status, id: res.headers.get("x-request-id"), body: await res.json() };
    });
    assert.equal(refused.status, 422);
    const answered = await page.evaluate(async (text) => {
      const res = await fetch("/v1/classify", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ texts: [text] }) });
      return res.status;
    }, POSITIVE);
    assert.equal(answered, 200);
    await page.waitForFunction((id) => document.querySelector("#errors tbody").textContent.includes(id), refused.id);
    assert.match(await page.textContent("#errors tbody"), new RegExp(refused.body.error.code));
    await page.waitForFunction(() => /\/s/.test(document.querySelector("#traffic tbody").textContent));
    await page.screenshot({ path: CLUSTER_SCREENSHOT, fullPage: true });
    assert.ok(statSync(CLUSTER_SCREENSHOT).size > 1000, "the screenshot was written");

    assert.ok(await page.isHidden("#problem"));
    assertOnlySameOrigin(seen);
    assert.deepEqual(seen.consoleErrors.filter((m) => !/Failed to load resource.*422/.test(m)), []);
    assert.deepEqual(seen.pageErrors, []);
  } finally {
    await context.close();
  }
});
