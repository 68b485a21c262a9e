// End-to-end test of the page at / in headless Chromium. scripts/browser-test.sh builds and
// starts the server, then runs this with BASE_URL, E2E_USER and E2E_PASSWORD set.
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const env = process.env;
for (const name of ['BASE_URL', 'E2E_USER', 'E2E_PASSWORD']) {
  if (!env[name]) {
    console.error(`e2e: ${name} is not set (run scripts/browser-test.sh)`);
    process.exit(2);
  }
}
const base = new URL(env.BASE_URL);
if (base.hostname !== '127.0.0.1') {
  console.error(`e2e: BASE_URL must be on 127.0.0.1, not ${base.hostname}`);
  process.exit(2);
}
const shots = env.SCREENSHOT_DIR || '.';
const jaegerUi = (env.JAEGER_UI_URL || 'http://localhost:16686').replace(/\/+$/, '');
const seven = fileURLToPath(new URL('../fixtures/seven.png', import.meta.url));

class Failure extends Error {}
function check(ok, message) {
  if (!ok) throw new Failure(message);
}

const browser = await chromium.launch({
  executablePath: env.CHROMIUM || '/usr/bin/chromium',
  headless: !env.E2E_HEADED,
  // Keep Chromium from calling home: this machine only reaches loopback.
  args: [
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-features=Translate,OptimizationHints,MediaRouter',
  ],
});
// A phone: small viewport, touch screen (the loop is drawn with a finger, the stroke with a mouse).
const context = await browser.newContext({
  viewport: { width: 390, height: 844 },
  deviceScaleFactor: 2,
  isMobile: true,
  hasTouch: true,
});
// Nothing may come from elsewhere (no CDN): the page must work offline.
const offsite = [];
context.on('request', (req) => {
  const url = new URL(req.url());
  if (url.protocol !== 'data:' && url.protocol !== 'blob:' && url.host !== base.host) offsite.push(url.href);
});
const page = await context.newPage();
page.setDefaultTimeout(15_000);
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(`uncaught: ${e.message}`));
page.on('console', (m) => {
  // Chromium reports every 4xx fetch as "Failed to load resource"; the 4xx are on purpose.
  if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
    pageErrors.push(`console: ${m.text()}`);
  }
});
const cdp = await context.newCDPSession(page);

/** Page coordinates of a point given as fractions of the canvas's drawing area. */
async function padToPage() {
  const box = await page.locator('#pad').evaluate((c) => {
    const r = c.getBoundingClientRect();
    return { x: r.left + c.clientLeft, y: r.top + c.clientTop, w: c.clientWidth, h: c.clientHeight };
  });
  return ([fx, fy]) => ({ x: box.x + fx * box.w, y: box.y + fy * box.h });
}

async function drawWithMouse(points) {
  const at = await padToPage();
  const [first, ...rest] = points.map(at);
  await page.mouse.move(first.x, first.y);
  await page.mouse.down();
  for (const p of rest) await page.mouse.move(p.x, p.y, { steps: 2 });
  await page.mouse.up();
}

async function drawWithFinger(points) {
  const at = await padToPage();
  const [first, ...rest] = points.map(at);
  const touch = (type, p) =>
    cdp.send('Input.dispatchTouchEvent', {
      type,
      touchPoints: p ? [{ x: p.x, y: p.y, id: 1, radiusX: 4, radiusY: 4, force: 1 }] : [],
    });
  await touch('touchStart', first);
  for (const p of rest) await touch('touchMove', p);
  await touch('touchEnd', null);
}

/** Runs `action`, waits for its /predict answer to be on the page, returns the shown digit. */
async function predicted(action) {
  const answered = page.waitForResponse((r) => r.url().endsWith('/predict'));
  await action();
  const res = await answered;
  await page.waitForFunction(() => document.getElementById('predict').textContent === 'Predict');
  return {
    status: res.status(),
    traceId: res.headers()['x-trace-id'],
    digit: await page.locator('#digit').textContent(),
  };
}

async function expectDigit(result, digit, what) {
  check(result.status === 200, `${what}: /predict answered ${result.status}`);
  check(await page.locator('#result').isVisible(), `${what}: the result is not shown`);
  check(result.digit === String(digit), `${what}: the page shows ${result.digit}, expected ${digit}`);
  const bars = page.locator('#bars li');
  check((await bars.count()) === 10, `${what}: ${await bars.count()} probability bars, expected 10`);
  const top = await page.locator('#bars li.top span').first().textContent();
  check(top === String(digit), `${what}: the highlighted bar is ${top}, expected ${digit}`);
  const announced = await page.getByRole('status').textContent();
  check(announced.startsWith(`Predicted ${digit}, probability`), `${what}: screen readers hear "${announced}"`);
  const probability = await page.locator('#probability').textContent();
  check(/^probability [<>]?\d+(\.\d)?%$/.test(probability), `${what}: odd probability text "${probability}"`);
}

const steps = [
  ['the page loads with the login form', async () => {
    const res = await page.goto(base.href);
    check(res.status() === 200, `GET / answered ${res.status()}`);
    await page.locator('#login-view').waitFor({ state: 'visible' });
    check(await page.locator('#draw-view').isHidden(), 'the drawing area is shown before login');
  }],

  ['a wrong password shows an error and stays on the login form', async () => {
    await page.getByLabel('Username').fill(env.E2E_USER);
    await page.getByLabel('Password').fill(`${env.E2E_PASSWORD}-wrong`);
    await page.getByRole('button', { name: 'Log in' }).click();
    const error = page.locator('#login-error');
    await page.waitForFunction(() => document.getElementById('login-error').textContent !== '');
    const text = await error.textContent();
    check(text === 'Wrong username or password.', `login error reads "${text}"`);
    check(await page.locator('#draw-view').isHidden(), 'the drawing area is shown after a failed login');
    await page.screenshot({ path: `${shots}/login-error.png`, fullPage: true });
  }],

  ['logging in shows the drawing area and stores nothing', async () => {
    await page.getByLabel('Password').fill(env.E2E_PASSWORD);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.locator('#draw-view').waitFor({ state: 'visible' });
    check((await page.getByLabel('Password').inputValue()) === '', 'the password field was not cleared');
    const stored = await page.evaluate(() => localStorage.length + sessionStorage.length);
    check(stored === 0 && (await context.cookies()).length === 0, 'the token was stored beyond memory');
    check(await page.locator('#predict').isDisabled(), 'Predict is enabled on an empty canvas');
  }],

  ['a vertical stroke drawn with the mouse is a 1', async () => {
    const stroke = Array.from({ length: 21 }, (_, i) => [0.5, 0.15 + (0.7 * i) / 20]);
    await drawWithMouse(stroke);
    const result = await predicted(() => page.getByRole('button', { name: 'Predict' }).click());
    await expectDigit(result, 1, 'vertical stroke');
  }],

  ['after Clear, a loop drawn with a finger is a 0', async () => {
    await page.getByRole('button', { name: 'Clear' }).click();
    check(await page.locator('#result').isHidden(), 'Clear left the old result on screen');
    check(await page.locator('#predict').isDisabled(), 'Predict is enabled after Clear');
    const loop = Array.from({ length: 49 }, (_, i) => {
      const a = (2 * Math.PI * i) / 44; // a little past a full turn, so the loop closes
      return [0.5 + 0.24 * Math.sin(a), 0.5 - 0.34 * Math.cos(a)];
    });
    await drawWithFinger(loop);
    const result = await predicted(() => page.getByRole('button', { name: 'Predict' }).click());
    await expectDigit(result, 0, 'closed loop');
    await page.screenshot({ path: `${shots}/e2e.png`, fullPage: true });
  }],

  ['a picked file is sent as is, and the trace id links into Jaeger', async () => {
    const result = await predicted(() => page.getByLabel('Or choose an image file').setInputFiles(seven));
    await expectDigit(result, 7, 'tests/fixtures/seven.png');
    check(/^[0-9a-f]{32}$/.test(result.traceId || ''), `x-trace-id is "${result.traceId}"`);
    const href = await page.locator('#trace a').getAttribute('href');
    check(href === `${jaegerUi}/trace/${result.traceId}`, `trace link is ${href}`);
    await page.screenshot({ path: `${shots}/file.png`, fullPage: true });
  }],

  ['a file that is not an image gives a readable error', async () => {
    const file = { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not a digit\n') };
    const result = await predicted(() => page.getByLabel('Or choose an image file').setInputFiles(file));
    check(result.status === 415, `/predict answered ${result.status} to a text file, expected 415`);
    const text = await page.locator('#predict-error').textContent();
    check(text.startsWith('That file type is not supported'), `error reads "${text}"`);
  }],

  ['a 401 from /predict sends the user back to the login form', async () => {
    await page.route('**/predict', (route) =>
      route.continue({ headers: { ...route.request().headers(), authorization: 'Bearer not-a-jwt' } }),
    );
    await page.getByRole('button', { name: 'Predict' }).click();
    await page.locator('#login-view').waitFor({ state: 'visible' });
    await page.unroute('**/predict');
    const text = await page.locator('#login-error').textContent();
    check(/log in again/i.test(text), `login error after a 401 reads "${text}"`);
    check(await page.locator('#draw-view').isHidden(), 'the drawing area is still shown after a 401');
  }],
];

let passed = 0;
let failed = 0;
for (const [name, run] of steps) {
  const started = Date.now();
  try {
    await run();
    passed += 1;
    console.log(`ok - ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    failed += 1;
    console.log(`not ok - ${name}`);
    console.error(`  ${e instanceof Failure ? e.message : e.stack || e}`);
    await page.screenshot({ path: `${shots}/failure.png`, fullPage: true }).catch(() => {});
    break; // each step starts where the previous one left the page
  }
}
if (!failed && pageErrors.length) {
  failed += 1;
  console.log('not ok - the page ran without script errors');
  for (const e of pageErrors) console.error(`  ${e}`);
}
if (!failed && offsite.length) {
  failed += 1;
  console.log('not ok - the page loads nothing from other hosts');
  for (const u of offsite) console.error(`  blocked: ${u}`);
}
await browser.close();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
