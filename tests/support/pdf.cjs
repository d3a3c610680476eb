// Small PDFs for the JS tests, built here so no binary fixture is needed. `pages` is a list of
// page texts; `{ resources: false }` leaves out the pages' /Resources, which makes the PDF
// parser panic (a real-world kind of malformed file).
function pdf(pages, { resources = true } = {}) {
  const n = pages.length;
  const objects = [
    '<< /Type /Catalog /Pages 2 0 R >>',
    `<< /Type /Pages /Kids [${pages.map((_, i) => `${4 + 2 * i} 0 R`).join(' ')}] /Count ${n} >>`,
    '<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>',
  ];
  pages.forEach((text, i) => {
    const res = resources ? '/Resources << /Font << /F1 3 0 R >> >> ' : '';
    objects.push(`<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] ${res}/Contents ${5 + 2 * i} 0 R >>`);
    const stream = `BT /F1 12 Tf 72 720 Td (${text}) Tj ET`;
    objects.push(`<< /Length ${stream.length} >>\nstream\n${stream}\nendstream`);
  });
  let out = '%PDF-1.4\n';
  const offsets = [];
  objects.forEach((o, i) => { offsets.push(out.length); out += `${i + 1} 0 obj\n${o}\nendobj\n`; });
  const xref = out.length;
  out += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n`;
  for (const off of offsets) out += `${String(off).padStart(10, '0')} 00000 n \n`;
  out += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(out, 'latin1');
}

module.exports = { pdf };
