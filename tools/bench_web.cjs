// `make bench-web`: serve dist/ (cross-origin isolated), open bench.html in headless Chromium,
// wait for the page to finish measuring, and print the JSON object it produced. The page loads
// the models itself (and caches them), so the first run also downloads them from the local server.
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const root = path.resolve(__dirname, '..');

function serve() {
  return new Promise((resolve, reject) => {
    const proc = spawn('python3', [path.join(root, 'tools', 'serve.py'), path.join(root, 'dist'), '--port', '0']);
    proc.stdout.on('data', (d) => {
      const m = /http:\/\/[\d.]+:\d+\//.exec(String(d));
      if (m) resolve({ proc, url: m[0] });
    });
    proc.on('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
}

async function main() {
  const server = await serve();
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'pocketrag-bench-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic'],
  });
  try {
    const page = context.pages()[0] || await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') console.error('page:', m.text()); });
    await page.goto(`${server.url}bench.html`);
    let last = '';
    const poll = setInterval(async () => {
      const s = await page.textContent('#status').catch(() => '');
      if (s && s !== last) { console.error(`bench: ${s}`); last = s; }
    }, 2000);
    await page.waitForSelector('#result:not([data-state="running"])', { timeout: 30 * 60_000 });
    clearInterval(poll);
    const text = await page.textContent('#result');
    console.log(text);
    if ((await page.getAttribute('#result', 'data-state')) !== 'done') process.exitCode = 1;
  } finally {
    await context.close();
    server.proc.kill();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
