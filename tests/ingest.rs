//! Reading PDFs: pages kept with their text, a PDF without a text layer refused, a page tree
//! that loops refused at once. The files are made here, object by object.

use pocketrag::ingest::{ingest, Format};

/// A minimal PDF with one page per entry of `pages` (each a line of text, or none).
fn pdf_bytes(pages: &[Option<&str>]) -> Vec<u8> {
    let n = pages.len();
    let mut objects: Vec<String> = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".into(),
        format!(
            "<< /Type /Pages /Kids [{}] /Count {n} >>",
            (0..n).map(|i| format!("{} 0 R", 4 + 2 * i)).collect::<Vec<_>>().join(" ")
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".into(),
    ];
    for (i, text) in pages.iter().enumerate() {
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
            5 + 2 * i
        ));
        let stream = text.map(|t| format!("BT /F1 12 Tf 72 720 Td ({t}) Tj ET")).unwrap_or_default();
        objects.push(format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()));
    }
    pocketrag::fuzz::pdf_from_objects(&objects)
}

#[test]
fn pdf_pages_are_kept_and_textless_pdfs_refused() {
    let d = ingest("two.pdf", &pdf_bytes(&[Some("Tides follow the moon."), Some("Second page here.")])).unwrap();
    assert_eq!(d.format, Format::Pdf);
    let pos = d.text.find("Second page").expect("page 2 text extracted");
    assert_eq!(d.block_at(pos).unwrap().page, Some(2));
    let first = d.text.find("Tides").expect("page 1 text extracted");
    assert_eq!(d.block_at(first).unwrap().page, Some(1));

    let e = ingest("scan.pdf", &pdf_bytes(&[None])).unwrap_err().to_string();
    assert!(e.contains("scan.pdf") && e.contains("no extractable text"), "{e}");
}

/// A page that is its own parent, with no resources of its own (so they are looked up the
/// parent chain): found by `make fuzz`, where it hung the PDF reader. Now refused at once;
/// the loop is run on a thread so that a regression fails instead of hanging the suite.
#[test]
fn a_pdf_whose_page_tree_loops_is_refused() {
    let good = String::from_utf8(pdf_bytes(&[Some("Tides follow the moon.")])).unwrap();
    // Same lengths, so the cross-reference offsets still hold.
    let looped = good.replacen("/Parent 2 0 R", "/Parent 4 0 R", 1).replacen("/Resources", "/Vesources", 1);
    assert_ne!(looped, good);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(ingest("loop.pdf", looped.as_bytes()).map(|_| ()).map_err(|e| e.to_string())));
    let e = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("the reader came back").unwrap_err();
    assert!(e.contains("loop.pdf") && e.contains("page tree loops back on itself"), "{e}");
    // The file it was made from still reads.
    assert!(ingest("good.pdf", good.as_bytes()).is_ok());
}
