// `make bench-web`: serve dist/ (cross-origin isolated), open bench.html in headless Chromium,
// wait for the page to finish measuring, and print the JSON object it produced. The page loads
// the models itself (and caches them), so the first run also downloads them from the local server.
const { withPage } = require('../tests/support/browser.cjs');

async function main() {
  await withPage(async (page, server) => {
    // ONLY=generation, ONLY=embedding or ONLY=peers (make bench-web ONLY=…) times that alone;
    // PRECISION=f32 takes the embedder's products in f32 (8 bits by default, as the page).
    const query = new URLSearchParams();
    if (process.env.ONLY) query.set('only', process.env.ONLY);
    if (process.env.PRECISION) query.set('precision', process.env.PRECISION);
    await page.goto(`${server.url}bench.html?${query}`);
    let last = '';
    const poll = setInterval(async () => {
      const s = await page.textContent('#status').catch(() => '');
      if (s && s !== last) { console.error(`bench: ${s}`); last = s; }
    }, 2000);
    await page.waitForSelector('#result:not([data-state="running"])', { timeout: 30 * 60_000 });
    clearInterval(poll);
    console.log(await page.textContent('#result'));
    if ((await page.getAttribute('#result', 'data-state')) !== 'done') process.exitCode = 1;
  });
}

main().catch((e) => { console.error(e); process.exit(1); });
