// webui.mjs: drives the demo page of a running semipaintd in Debian's headless chromium (playwright-core): upload, paint, undo, inpaint with model auto and then with a named model family, check the result, its caption (model, method, routing), neighbours and timings; saves a screenshot.
// The daemon should serve at least two model families (tests/it_webui.sh adds one named "second").
// Run by tests/it_webui.sh. Environment:
//   BASE_URL   the daemon, e.g. http://127.0.0.1:8080 (loopback only: every other address is blocked)
//   IMAGE      optional JPEG or PNG to upload (converted to PNG in the browser); default: a drawn test card
//   SHOT       where to save the screenshot (PNG)
//   PAGE_FILE  optional: serve this file at GET / instead of the daemon (only while the daemon has no page)
//   CHROMIUM   the browser (default /usr/bin/chromium); NPM_PREFIX where playwright-core is (default .deps/npm)
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";

const base = process.env.BASE_URL;
if (!base || !/^http:\/\/(127\.\d+\.\d+\.\d+|localhost|\[::1\]):\d+$/.test(base)) {
  console.error(`webui: BASE_URL must be a loopback http://HOST:PORT, not '${base}'`);
  process.exit(2);
}
const require = createRequire(resolve(process.env.NPM_PREFIX || ".deps/npm", "node_modules", "_"));
const { chromium } = require("playwright-core");

let passes = 0, fails = 0;
function check(what, ok, detail) {
  if (ok) { passes++; console.log(`ok   ${what}`); }
  else { fails++; console.log(`FAIL ${what}${detail !== undefined ? ": " + detail : ""}`); }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-default-apps", "--disable-extensions", "--disable-sync",
         "--disable-breakpad", "--disable-domain-reliability", "--metrics-recording-only", "--no-first-run",
         "--no-default-browser-check", "--no-pings", "--password-store=basic", "--use-mock-keychain"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const foreign = [], errors = [];
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") errors.push(`console: ${m.text()}`); });
  // Loopback only: the page is self-contained, so any other request is a failure (and is not sent).
  await context.route("**/*", async (route) => {
    const url = route.request().url();
    if (!url.startsWith(base + "/")) {
      foreign.push(url);
      return route.abort("blockedbyclient");
    }
    if (process.env.PAGE_FILE && url === base + "/")
      return route.fulfill({ status: 200, contentType: "text/html; charset=utf-8", body: readFileSync(process.env.PAGE_FILE) });
    return route.continue();
  });

  // What the server says it serves (asked directly, not through the page).
  const infoJ = await (await fetch(base + "/v1/info", { headers: { Accept: "application/json" } })).json();
  const fams = Array.isArray(infoJ.families) ? infoJ.families : [];
  const names = fams.map((f) => f.name);
  const famOf = (name) => fams.find((f) => f.name === name);
  check("GET /v1/info lists at least two model families, default auto", fams.length >= 2 && infoJ.default_model === "auto",
        JSON.stringify({ families: names, default_model: infoJ.default_model }));

  const nav = await page.goto(base + "/", { waitUntil: "load" });
  check("GET / answers 200 with HTML", nav && nav.status() === 200 && /text\/html/.test(nav.headers()["content-type"] || ""),
        nav && `${nav.status()} ${nav.headers()["content-type"]}`);
  check("the title is the demo's", (await page.title()) === "semipaint demo");
  await page.waitForFunction(() => / sim\d/.test(document.getElementById("info").textContent), null, { timeout: 15000 })
    .catch(() => {});
  const info = await page.textContent("#info");
  const famList = fams.map((f) => `${f.name} ${f.mode}`).join(", ");
  check("the header shows the families and their modes from /v1/info",
        info.startsWith(`semipaintd ${infoJ.version} · ${famList} · ${infoJ.backend}`), `'${info}' lacks '${famList}'`);
  const opts = await page.$$eval("#model option", (os) => os.map((o) => ({ value: o.value, label: o.textContent, selected: o.selected })));
  check("the Model selector lists auto, then every family of /v1/info with its working size",
        opts.length === fams.length + 1 && opts[0].value === "auto" && /auto/.test(opts[0].label) &&
        fams.every((f, i) => opts[i + 1].value === f.name && opts[i + 1].label.includes(f.name) &&
                             opts[i + 1].label.includes(`${f.working_size} px`)), JSON.stringify(opts));
  check("the Model selector starts on auto", await page.inputValue("#model") === "auto" && opts[0].selected);
  check("the Model selector has a label", await page.locator("label", { has: page.locator("#model") }).textContent()
        .then((t) => t.trim().startsWith("Model")));
  check("Inpaint is disabled before an image is loaded", await page.isDisabled("#submit"));

  // A file that is not an image is refused with a message.
  await page.setInputFiles("#file", { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("hello") });
  await page.waitForFunction(() => document.getElementById("status").classList.contains("error"));
  check("a text file is refused", /JPEG or PNG/.test(await page.textContent("#status")), await page.textContent("#status"));

  // The input image as PNG bytes (PNG so that the kept pixels can be compared exactly).
  const src = process.env.IMAGE ? readFileSync(process.env.IMAGE).toString("base64") : "";
  const pngB64 = await page.evaluate(async (b64) => {
    const c = document.createElement("canvas");
    const x = c.getContext("2d");
    if (b64) {
      const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
      const bmp = await createImageBitmap(new Blob([bytes]), { colorSpaceConversion: "none" });
      c.width = bmp.width; c.height = bmp.height;
      x.drawImage(bmp, 0, 0);
    } else {
      c.width = c.height = 256;
      for (let y = 0; y < 256; y += 16)
        for (let xx = 0; xx < 256; xx += 16) {
          x.fillStyle = `rgb(${xx}, ${y}, ${(xx ^ y) & 255})`;
          x.fillRect(xx, y, 16, 16);
        }
    }
    return c.toDataURL("image/png").split(",")[1];
  }, src);

  // Upload by drag and drop onto the drop zone.
  await page.evaluate((b64) => {
    const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], "face.png", { type: "image/png" }));
    document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, pngB64);
  await page.waitForSelector("#editor:not([hidden])");
  const status = await page.textContent("#status");
  check("a dropped PNG is loaded into the editor", /^face\.png: \d+×\d+/.test(status), status);
  const [W, H] = status.match(/(\d+)×(\d+)/).slice(1).map(Number);

  // Paint: stroke A (kept), stroke B (undone with the button), stroke C (undone with Ctrl+Z).
  await page.evaluate(() => {
    const b = document.getElementById("brush");
    b.value = "36";
    b.dispatchEvent(new Event("input", { bubbles: true }));
  });
  const box = await page.locator("#editor").boundingBox();
  const at = (fx, fy) => [box.x + fx * box.width, box.y + fy * box.height];
  async function stroke(from, to) {
    await page.mouse.move(...at(...from));
    await page.mouse.down();
    for (let i = 1; i <= 12; i++)
      await page.mouse.move(...at(from[0] + (to[0] - from[0]) * i / 12, from[1] + (to[1] - from[1]) * i / 12));
    await page.mouse.up();
  }
  await stroke([0.3, 0.55], [0.7, 0.55]);
  check("Inpaint is enabled once a hole is painted", await page.isEnabled("#submit"));
  await stroke([0.5, 0.12], [0.5, 0.22]);
  await page.click("#undo");
  await stroke([0.12, 0.85], [0.25, 0.85]);
  await page.keyboard.press("Control+z");
  await page.mouse.move(box.x + box.width + 40, box.y); // the brush cursor leaves the image
  await page.selectOption("#method", "sim");
  await page.selectOption("#format", "png");

  const [resp] = await Promise.all([
    page.waitForResponse((r) => r.url() === base + "/v1/inpaint" && r.request().method() === "POST", { timeout: 60000 }),
    page.click("#submit"),
  ]);
  const req = resp.request();
  const sent = req.postDataJSON();
  check("the request is JSON and asks for JSON", req.headers()["content-type"] === "application/json" &&
        req.headers()["accept"] === "application/json");
  check("the request carries image, mask, method, model (auto) and format only",
        JSON.stringify(Object.keys(sent).sort()) === '["format","image","mask","method","model"]' && sent.method === "sim" &&
        sent.model === "auto" && sent.format === "png" && sent.image === "data:image/png;base64," + pngB64,
        `${Object.keys(sent).join(",")} model=${sent.model}`);
  const got = await resp.json();
  check("POST /v1/inpaint answers 200 with a PNG of the input's size", resp.status() === 200 && got.format === "png" &&
        got.width === W && got.height === H, `${resp.status()} ${JSON.stringify({ ...got, image: undefined })}`);
  await page.waitForFunction(() => {
    const im = document.getElementById("result");
    return !document.getElementById("results").hidden && im.complete && im.naturalWidth > 0;
  }, null, { timeout: 15000 });
  check("auto: the answer names a family of /v1/info, routing requested auto, as X-Model says",
        names.includes(got.model) && got.routing && got.routing.requested === "auto" && typeof got.routing.p_model === "number" &&
        resp.headers()["x-model"] === got.model && resp.headers()["x-inpaint-method"] === got.method,
        `${got.model} ${JSON.stringify(got.routing)} X-Model ${resp.headers()["x-model"]}`);
  const caption = await page.textContent("#result-caption");
  check("auto: the caption names the family that served, the routing and the method",
        caption.startsWith(`Result: ${got.model} (auto, p=${got.routing.p_model.toFixed(2)}), ${got.method}`) &&
        caption.endsWith(`, ${W}×${H} PNG`), caption);

  // Pixels: decode what was sent and what came back, exactly (no colour conversion).
  const px = await page.evaluate(async ({ image, mask, result }) => {
    async function rgba(url) {
      const blob = await (await fetch(url)).blob();
      const bmp = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
      const c = new OffscreenCanvas(bmp.width, bmp.height), x = c.getContext("2d");
      x.drawImage(bmp, 0, 0);
      return { w: bmp.width, h: bmp.height, d: x.getImageData(0, 0, bmp.width, bmp.height).data };
    }
    const a = await rgba(image), m = await rgba(mask), r = await rgba(result);
    const shown = document.getElementById("result");
    const s = await rgba(shown.src);
    let hole = 0, changedIn = 0, diffIn = 0, changedOut = 0, shownSame = 1;
    for (let i = 0; i < a.d.length; i += 4) {
      const isHole = m.d[i] > 127;
      const d = Math.abs(a.d[i] - r.d[i]) + Math.abs(a.d[i + 1] - r.d[i + 1]) + Math.abs(a.d[i + 2] - r.d[i + 2]);
      if (isHole) { hole++; diffIn += d / 3; if (d) changedIn++; } else if (d) changedOut++;
      if (s.d[i] !== r.d[i] || s.d[i + 1] !== r.d[i + 1] || s.d[i + 2] !== r.d[i + 2]) shownSame = 0;
    }
    const maskAt = (fx, fy) => m.d[4 * (Math.floor(fy * m.h) * m.w + Math.floor(fx * m.w))];
    return { sizes: [a.w, a.h, m.w, m.h, r.w, r.h], hole, changedIn, meanIn: hole ? diffIn / hole : 0, changedOut, shownSame,
             maskA: maskAt(0.5, 0.55), maskB: maskAt(0.5, 0.17), maskC: maskAt(0.18, 0.85), maskOff: maskAt(0.5, 0.95) };
  }, { image: sent.image, mask: sent.mask, result: `data:image/png;base64,${got.image}` });
  check("image, mask and result have one size", px.sizes.every((v, i) => v === [W, H][i % 2]), px.sizes.join(","));
  check("the mask holds stroke A where it was drawn", px.maskA === 255 && px.maskOff === 0, `${px.maskA} ${px.maskOff}`);
  check("Undo and Ctrl+Z removed strokes B and C", px.maskB === 0 && px.maskC === 0, `${px.maskB} ${px.maskC}`);
  check("the hole is a few percent of the image", px.hole > 0.01 * W * H && px.hole < 0.2 * W * H, px.hole);
  check("the result differs from the original inside the stroke", px.changedIn > 0.5 * px.hole && px.meanIn > 2,
        `${px.changedIn}/${px.hole} pixels changed, mean |diff| ${px.meanIn.toFixed(2)}`);
  check("pixels outside the hole are returned unchanged", px.changedOut === 0, `${px.changedOut} changed`);
  check("the page shows the returned image", px.shownSame === 1);

  const dl = await page.locator("#download").evaluate((a) => ({ href: a.href, name: a.download }));
  check("the download link holds the result", dl.href.startsWith("blob:") && dl.name === "face-inpainted.png", JSON.stringify(dl));
  const stages = await page.$$eval("#timings td:first-child", (tds) => tds.map((t) => t.textContent));
  check("the timings list the server's stages", Object.keys(got.timings_ms).every((k) => stages.includes(k === "total" ? "total (server)" : k)) &&
        stages.includes("round trip (browser)"), stages.join(","));

  // Neighbours: as the served family's database has them, each fetched from that family.
  async function checkNeighbours(got, what) {
    const nb = got.neighbors || [];
    const fam = famOf(got.model) || {};
    if (got.method !== "sim") {
      check(`${what}: no neighbours for ${got.method}, and the page says why`,
            nb.length === 0 && /does not retrieve/.test(await page.textContent("#neighbors")));
    } else if (fam.mode === "sim0") {
      check(`${what}: Sim-0 (${got.model}): no neighbours, and the page says why`,
            nb.length === 0 && (await page.textContent("#neighbors")).includes(`model ${got.model} has no database`),
            await page.textContent("#neighbors"));
    } else {
      check(`${what}: the answer names neighbours with scores`,
            nb.length > 0 && nb.every((n) => Number.isInteger(n.id) && typeof n.score === "number"), JSON.stringify(nb));
      await page.waitForFunction((n) => {
        const ims = [...document.querySelectorAll("#neighbors img")];
        return ims.length === n && ims.every((im) => im.complete && im.naturalWidth > 0);
      }, nb.length, { timeout: 15000 }).catch(() => {});
      const shown = await page.$$eval("#neighbors figure", (fs) => fs.map((f) => ({
        src: f.querySelector("img").getAttribute("src"), ok: f.querySelector("img").naturalWidth > 0,
        cap: f.querySelector("figcaption").textContent })));
      check(`${what}: each neighbour is shown from GET /v1/images/{id}?model=${got.model} with its score`,
            shown.length === nb.length && shown.every((s, i) => s.ok && s.src === `v1/images/${nb[i].id}?model=${got.model}` &&
                                                                s.cap.includes(nb[i].score.toFixed(4))),
            JSON.stringify(shown));
    }
  }
  await checkNeighbours(got, "auto");

  // The same hole again with a named family: one that auto did not choose, when there is one.
  const named = (fams.find((f) => f.name !== got.model) || fams[fams.length - 1] || { name: "?" }).name;
  await page.selectOption("#model", named);
  const [resp2] = await Promise.all([
    page.waitForResponse((r) => r.url() === base + "/v1/inpaint" && r.request().method() === "POST", { timeout: 60000 }),
    page.click("#submit"),
  ]);
  const sent2 = resp2.request().postDataJSON();
  check(`a request with model ${named} chosen sends model=${named}`, sent2.model === named && sent2.method === "sim",
        `model=${sent2.model} method=${sent2.method}`);
  const got2 = await resp2.json();
  check(`${named}: the answer is from ${named}, routing requested named, as X-Model says`,
        resp2.status() === 200 && got2.model === named && got2.routing && got2.routing.requested === "named" &&
        got2.routing.p_nets === null && resp2.headers()["x-model"] === named && got2.method === "sim",
        `${resp2.status()} ${got2.model} ${got2.method} ${JSON.stringify(got2.routing)} X-Model ${resp2.headers()["x-model"]}`);
  await page.waitForFunction((id) => document.getElementById("request-meta").textContent === `request ${id}`,
                             got2.request_id, { timeout: 15000 }).catch(() => {});
  const caption2 = await page.textContent("#result-caption");
  check(`${named}: the caption names ${named} and the method, without routing`,
        caption2 === `Result: ${named}, sim, ${W}×${H} PNG`, caption2);
  await checkNeighbours(got2, named);

  // A second request with the hole cleared is not sent: Inpaint is disabled.
  await page.click("#clear");
  check("Clear empties the hole and disables Inpaint", await page.isDisabled("#submit") && await page.isDisabled("#undo"));
  await stroke([0.3, 0.55], [0.7, 0.55]); // repaint for the screenshot

  await page.screenshot({ path: process.env.SHOT || "build/tests/webui.png", fullPage: true });
  check("no request left the loopback address", foreign.length === 0, foreign.join(" "));
  check("no script error or console error", errors.length === 0, errors.join(" | "));
} catch (e) {
  check("the browser session ran to the end", false, e.stack || String(e));
} finally {
  await browser.close();
}
console.log(`webui: ${passes} passed, ${fails} failed`);
process.exit(fails ? 1 : 0);
