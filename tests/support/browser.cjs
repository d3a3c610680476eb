// What the browser tests and `make bench-web` share: the static server and Debian's Chromium.
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const root = path.resolve(__dirname, '..', '..');

/// Start tools/serve.py on dist/ at a free port. Resolves to {proc, url, log} once it listens;
/// `log` collects one line per request ("GET /path 200") when started with '--log'.
function serve(...flags) {
  return new Promise((resolve, reject) => {
    const proc = spawn('python3', [path.join(root, 'tools', 'serve.py'), path.join(root, 'dist'), '--port', '0', ...flags]);
    const log = [];
    let url = null;
    let buffered = '';
    proc.stdout.on('data', (d) => {
      buffered += String(d);
      const lines = buffered.split('\n');
      buffered = lines.pop();
      for (const line of lines) {
        const m = /http:\/\/[\d.]+:\d+\//.exec(line);
        if (m && !url) { url = m[0]; resolve({ proc, url, log }); } else log.push(line);
      }
    });
    proc.on('exit', (code) => { if (!url) reject(new Error(`server exited with ${code}`)); });
  });
}

/// Headless Chromium with a fresh profile (returned as `profile` to delete afterwards).
/// `extraArgs`: more command-line flags, such as '--enable-unsafe-webgpu', without which headless
/// Chromium offers no WebGPU adapter.
async function launch(extraArgs = []) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'pocketrag-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic', ...extraArgs],
  });
  context.profile = profile;
  return context;
}

/// Serve dist/, open one page in a fresh Chromium, run `use(page, server)`, and always close
/// both and delete the profile: the tools' (`make bench-web`, `make eval-precision`) frame.
/// Page errors printed to the console are passed on to stderr.
async function withPage(use) {
  const server = await serve();
  const context = await launch();
  try {
    const page = context.pages()[0] || await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') console.error('page:', m.text()); });
    return await use(page, server);
  } finally {
    await context.close();
    server.proc.kill();
    fs.rmSync(context.profile, { recursive: true, force: true });
  }
}

module.exports = { serve, launch, withPage };
