//! Bytes and a file name in, plain text out — with a map from text offsets back to where each
//! piece came from (page, heading), so a citation can point at the place in the original file.
//!
//! Parsing is left to well-kept crates (pulldown-cmark, scraper/html5ever, pdf-extract); this
//! module only walks their output and records block boundaries.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Files larger than this are refused before parsing: the browser tab would run out of memory
/// long before a file this size became useful context for a 135M-parameter model.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    Text,
    Markdown,
    Html,
    Pdf,
}

/// One block of text (paragraph, list item, table cell, code block...) and where it came from.
/// Blocks are the units the chunker never merges across a heading or page change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// Byte range in `Document::text`.
    pub start: usize,
    pub end: usize,
    /// The nearest heading above the block, if the format has headings.
    pub heading: Option<String>,
    /// 1-based page number, for paginated formats.
    pub page: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// The name the user knows the file by (a path for the CLI, a file name in the browser).
    pub name: String,
    pub format: Format,
    /// The extracted text; blocks are separated by blank lines.
    pub text: String,
    pub blocks: Vec<Block>,
}

impl Document {
    /// The block that contains byte offset `pos` of the text.
    pub fn block_at(&self, pos: usize) -> Option<&Block> {
        let i = self.blocks.partition_point(|b| b.end <= pos);
        self.blocks.get(i).filter(|b| b.start <= pos)
    }
}

/// Guess the format from the name, and from the bytes where the name says nothing.
pub fn detect_format(name: &str, bytes: &[u8]) -> Format {
    if bytes.starts_with(b"%PDF-") {
        return Format::Pdf;
    }
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "md" | "markdown" | "mdown" | "mkd" => Format::Markdown,
        "html" | "htm" | "xhtml" => Format::Html,
        "pdf" => Format::Pdf,
        _ => Format::Text,
    }
}

/// Turn one file into a `Document`. Every failure names the file and says why in words a user can
/// act on; nothing here panics on hostile input (pdf-extract can, so native builds contain it).
pub fn ingest(name: &str, bytes: &[u8]) -> Result<Document> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(Error::document(
            name,
            format!(
                "file is {} MB; the limit is {} MB",
                bytes.len() / (1024 * 1024),
                MAX_DOCUMENT_BYTES / (1024 * 1024)
            ),
        ));
    }
    let format = detect_format(name, bytes);
    if format == Format::Pdf {
        let pages =
            extract_pdf_pages(bytes).map_err(|e| Error::document(name, format!("cannot read this PDF: {e}")))?;
        return ingest_pdf_pages(name, &pages);
    }
    let text = decode_text(name, bytes)?;
    let mut builder = match format {
        Format::Markdown => markdown(&text),
        Format::Html => html(&text),
        _ => plain(&text, None),
    };
    builder.finish_block();
    if builder.blocks.is_empty() {
        return Err(Error::document(name, "the file contains no text"));
    }
    Ok(Document { name: name.to_string(), format, text: builder.text, blocks: builder.blocks })
}

/// UTF-8 text, tolerating a BOM and a few broken bytes, but refusing binary files: a document made
/// of replacement characters would only pollute the index.
fn decode_text(name: &str, bytes: &[u8]) -> Result<String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let head = &bytes[..bytes.len().min(8192)];
    if head.contains(&0) {
        return Err(Error::document(name, "looks like a binary file (it contains NUL bytes)"));
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_string()),
        Err(_) => {
            let lossy = String::from_utf8_lossy(bytes);
            let bad = lossy.chars().filter(|&c| c == char::REPLACEMENT_CHARACTER).count();
            let total = lossy.chars().count().max(1);
            if bad * 100 > total {
                Err(Error::document(name, "not UTF-8 text (binary, or a legacy encoding)"))
            } else {
                Ok(lossy.into_owned())
            }
        }
    }
}

/// Accumulates text block by block. Whitespace inside a block is collapsed so offsets stay
/// meaningful and chunks are not padded with layout noise.
#[derive(Default)]
struct Builder {
    text: String,
    blocks: Vec<Block>,
    open: Option<usize>,
    heading: Option<String>,
    page: Option<u32>,
    pending_space: bool,
}

impl Builder {
    /// Appends text, joining it to the previous word with a space only where the source had
    /// whitespace (so `**bold**er` stays one word but `a <b>b</b>` stays two).
    fn push(&mut self, s: &str) {
        if s.starts_with(char::is_whitespace) {
            self.pending_space = true;
        }
        for (i, word) in s.split_whitespace().enumerate() {
            if self.open.is_none() {
                if !self.text.is_empty() {
                    self.text.push_str("\n\n");
                }
                self.open = Some(self.text.len());
            } else if self.pending_space || i > 0 {
                self.text.push(' ');
            }
            self.text.push_str(word);
            self.pending_space = false;
        }
        if s.ends_with(char::is_whitespace) {
            self.pending_space = true;
        }
    }

    fn finish_block(&mut self) {
        if let Some(start) = self.open.take() {
            self.blocks.push(Block { start, end: self.text.len(), heading: self.heading.clone(), page: self.page });
        }
        self.pending_space = false;
    }
}

fn plain(text: &str, page: Option<u32>) -> Builder {
    let mut b = Builder { page, ..Default::default() };
    plain_into(&mut b, text);
    b
}

/// Paragraphs are separated by blank lines; single newlines are soft wraps.
fn plain_into(b: &mut Builder, text: &str) {
    for line in text.lines() {
        if line.trim().is_empty() {
            b.finish_block();
        } else {
            b.push(line);
            b.pending_space = true;
        }
    }
    b.finish_block();
}

fn markdown(src: &str) -> Builder {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
    let mut b = Builder::default();
    let mut heading: Option<String> = None;
    let opts = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_FOOTNOTES;
    for event in Parser::new_ext(src, opts) {
        match event {
            Event::Start(Tag::Heading { .. }) => {
                b.finish_block();
                heading = Some(String::new());
            }
            Event::End(TagEnd::Heading(_)) => {
                let h = heading.take().unwrap_or_default();
                let h = h.split_whitespace().collect::<Vec<_>>().join(" ");
                // The heading text itself is content too (it often names the topic), so it opens
                // the section it governs.
                b.heading = (!h.is_empty()).then_some(h.clone());
                b.push(&h);
                b.finish_block();
            }
            Event::Text(t) | Event::Code(t) | Event::InlineMath(t) | Event::DisplayMath(t) => match heading.as_mut() {
                Some(h) => h.push_str(&t),
                None => b.push(&t),
            },
            Event::SoftBreak | Event::HardBreak => match heading.as_mut() {
                Some(h) => h.push(' '),
                None => b.pending_space = true,
            },
            Event::End(
                TagEnd::Paragraph
                | TagEnd::Item
                | TagEnd::CodeBlock
                | TagEnd::TableRow
                | TagEnd::TableHead
                | TagEnd::BlockQuote(_)
                | TagEnd::FootnoteDefinition,
            ) => b.finish_block(),
            Event::End(TagEnd::TableCell) => b.pending_space = true,
            // Raw HTML inside Markdown is markup, not content.
            Event::Html(_) | Event::InlineHtml(_) => {}
            _ => {}
        }
    }
    b
}

fn html(src: &str) -> Builder {
    let doc = scraper::Html::parse_document(src);
    let mut b = Builder::default();
    walk_html(doc.tree.root(), &mut b);
    b
}

fn walk_html(node: ego_tree::NodeRef<'_, scraper::Node>, b: &mut Builder) {
    use scraper::Node;
    for child in node.children() {
        match child.value() {
            Node::Text(t) => b.push(t),
            Node::Element(el) => {
                let name = el.name();
                match name {
                    "script" | "style" | "noscript" | "template" | "head" | "svg" | "iframe" | "object" => continue,
                    "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                        b.finish_block();
                        let text: String = scraper::ElementRef::wrap(child)
                            .map(|e| e.text().collect::<Vec<_>>().join(" "))
                            .unwrap_or_default();
                        let h = text.split_whitespace().collect::<Vec<_>>().join(" ");
                        b.heading = (!h.is_empty()).then_some(h.clone());
                        b.push(&h);
                        b.finish_block();
                        continue;
                    }
                    _ => {}
                }
                let block = matches!(
                    name,
                    "p" | "div"
                        | "li"
                        | "pre"
                        | "blockquote"
                        | "section"
                        | "article"
                        | "main"
                        | "header"
                        | "footer"
                        | "nav"
                        | "aside"
                        | "tr"
                        | "table"
                        | "ul"
                        | "ol"
                        | "dl"
                        | "dt"
                        | "dd"
                        | "figure"
                        | "figcaption"
                        | "form"
                        | "br"
                        | "hr"
                        | "body"
                        | "address"
                        | "details"
                        | "summary"
                );
                if block {
                    b.finish_block();
                } else if matches!(name, "td" | "th") {
                    b.pending_space = true;
                }
                walk_html(child, b);
                if block {
                    b.finish_block();
                } else if matches!(name, "td" | "th") {
                    b.pending_space = true;
                }
            }
            _ => walk_html(child, b),
        }
    }
}

/// A PDF's document from the text of its pages (as [`extract_pdf_pages`] gives it). Separate from
/// extraction because in the browser extraction runs in a disposable worker: the PDF parser can
/// panic, and a panic in WebAssembly kills the instance.
pub fn ingest_pdf_pages(name: &str, pages: &[String]) -> Result<Document> {
    let mut b = Builder::default();
    for (i, page) in pages.iter().enumerate() {
        b.finish_block();
        b.page = Some(i as u32 + 1);
        plain_into(&mut b, page);
    }
    b.finish_block();
    if b.blocks.is_empty() {
        return Err(Error::document(name, "the PDF has no extractable text (a scanned image? run OCR first)"));
    }
    Ok(Document { name: name.to_string(), format: Format::Pdf, text: b.text, blocks: b.blocks })
}

/// The text of each page of a PDF.
#[cfg(not(target_arch = "wasm32"))]
pub fn extract_pdf_pages(bytes: &[u8]) -> std::result::Result<Vec<String>, String> {
    // pdf-extract panics on some malformed files; one bad PDF must not take the batch down.
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out = std::panic::catch_unwind(|| extract_checked(bytes));
    std::panic::set_hook(prev);
    out.unwrap_or_else(|_| Err("the PDF parser failed on this file (malformed PDF?)".to_string()))
}

/// pdf-extract, after checking the page tree it would otherwise walk forever.
fn extract_checked(bytes: &[u8]) -> std::result::Result<Vec<String>, String> {
    let doc = pdf_extract::Document::load_mem(bytes).map_err(|e| e.to_string())?;
    if page_tree_loops(&doc) {
        return Err("the PDF's page tree loops back on itself (a damaged or crafted file)".to_string());
    }
    pdf_extract::extract_text_from_mem_by_pages(bytes).map_err(|e| e.to_string())
}

/// Whether following a page's /Parent links, or a page tree's /Kids, comes back to where it has
/// been. pdf-extract looks up inherited page attributes up the /Parent chain without noticing a
/// loop: a page that is its own parent hung it (found by `make fuzz`; in the page that is a PDF
/// worker that never answers). A page listed twice counts as a loop too: the format gives every
/// page one parent.
fn page_tree_loops(doc: &pdf_extract::Document) -> bool {
    use std::collections::HashSet;
    for (&id, object) in &doc.objects {
        let Ok(mut dict) = object.as_dict() else { continue };
        let mut seen = HashSet::from([id]);
        while let Ok(parent) = dict.get(b"Parent").and_then(|p| p.as_reference()) {
            if !seen.insert(parent) {
                return true;
            }
            let Ok(next) = doc.get_dictionary(parent) else { break };
            dict = next;
        }
    }
    let Ok(root) = doc.catalog().and_then(|c| c.get(b"Pages")).and_then(|p| p.as_reference()) else { return false };
    let (mut seen, mut stack) = (HashSet::new(), vec![root]);
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            return true;
        }
        if let Ok(kids) = doc.get_dictionary(id).and_then(|d| d.get(b"Kids")).and_then(|k| k.as_array()) {
            stack.extend(kids.iter().filter_map(|k| k.as_reference().ok()));
        }
    }
    false
}

/// The text of each page of a PDF. Here a parser panic aborts the instance: call it where that
/// costs nothing (the page runs it in a worker of its own).
#[cfg(target_arch = "wasm32")]
pub fn extract_pdf_pages(bytes: &[u8]) -> std::result::Result<Vec<String>, String> {
    extract_checked(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(d: &Document) -> Vec<&str> {
        d.blocks.iter().map(|b| &d.text[b.start..b.end]).collect()
    }

    #[test]
    fn plain_text_paragraphs() {
        let d = ingest("a.txt", b"First line\nwraps here.\n\n\nSecond   para.\n").unwrap();
        assert_eq!(texts(&d), ["First line wraps here.", "Second para."]);
        assert_eq!(d.format, Format::Text);
    }

    #[test]
    fn markdown_headings_and_inline() {
        let src = "# Title\n\nSome **bold**er text and `code`.\n\n## Part two\n\n- item one\n- item two\n";
        let d = ingest("n.md", src.as_bytes()).unwrap();
        assert_eq!(texts(&d), ["Title", "Some bolder text and code.", "Part two", "item one", "item two"]);
        assert_eq!(d.blocks[1].heading.as_deref(), Some("Title"));
        assert_eq!(d.blocks[4].heading.as_deref(), Some("Part two"));
    }

    #[test]
    fn html_drops_scripts_and_keeps_text_inert() {
        let src = "<html><head><title>t</title><script>alert(1)</script></head><body>\
                   <h1>Cats</h1><p>Cats <b>purr</b>.</p><img src=x onerror=alert(2)>\
                   <p>&lt;script&gt;not run&lt;/script&gt;</p></body></html>";
        let d = ingest("c.html", src.as_bytes()).unwrap();
        assert_eq!(texts(&d), ["Cats", "Cats purr.", "<script>not run</script>"]);
        assert_eq!(d.blocks[1].heading.as_deref(), Some("Cats"));
        assert!(!d.text.contains("alert"));
    }

    #[test]
    fn refuses_binary_empty_and_huge() {
        let e = ingest("x.bin", &[0u8, 1, 2, 3, 0, 0]).unwrap_err().to_string();
        assert!(e.contains("x.bin") && e.contains("binary"), "{e}");
        let e = ingest("e.txt", b"  \n\n ").unwrap_err().to_string();
        assert!(e.contains("no text"), "{e}");
        let big = vec![b'a'; MAX_DOCUMENT_BYTES + 1];
        let e = ingest("big.txt", &big).unwrap_err().to_string();
        assert!(e.contains("limit"), "{e}");
        let e = ingest("bad.pdf", b"%PDF-1.4 garbage").unwrap_err().to_string();
        assert!(e.contains("bad.pdf"), "{e}");
    }

    #[test]
    fn block_lookup_by_offset() {
        let d = ingest("a.txt", b"one\n\ntwo\n\nthree").unwrap();
        let pos = d.text.find("two").unwrap();
        let b = d.block_at(pos + 1).unwrap();
        assert_eq!(&d.text[b.start..b.end], "two");
    }
}
