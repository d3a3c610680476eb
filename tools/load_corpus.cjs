// The document set the load benchmarks index (`make bench-memory`): the sample articles repeated
// and numbered into `files` different Markdown files of `megabytes` MB in all (50 MB in 1,000
// files by default). Every file differs from the others from its first line on, so no two
// chunks are the same text.
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const MB = 2 ** 20;

function* corpusFiles({ megabytes = 50, files = 1000 } = {}) {
  const samples = path.join(root, 'samples');
  const corpus = fs.readdirSync(samples).sort().map((f) => fs.readFileSync(path.join(samples, f), 'utf8')).join('\n\n');
  const fileBytes = Math.ceil((megabytes * MB) / files);
  for (let i = 0; i < files; i++) {
    let text = '';
    while (text.length < fileBytes) text += `Part ${i}-${text.length}. ${corpus}`;
    yield { name: `doc${String(i).padStart(4, '0')}.md`, text: text.slice(0, fileBytes) };
  }
}

/// Write the set into `dir` (made if missing); returns the paths, in order.
function writeCorpus(dir, options) {
  fs.mkdirSync(dir, { recursive: true });
  const paths = [];
  for (const { name, text } of corpusFiles(options)) {
    const p = path.join(dir, name);
    fs.writeFileSync(p, text);
    paths.push(p);
  }
  return paths;
}

module.exports = { corpusFiles, writeCorpus, MB };

if (require.main === module) {
  const [dir, megabytes = '50', files = '1000'] = process.argv.slice(2);
  const paths = writeCorpus(dir, { megabytes: Number(megabytes), files: Number(files) });
  console.log(`${paths.length} files in ${dir}`);
}
