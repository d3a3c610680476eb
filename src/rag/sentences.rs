//! The sentences of the retrieved passages, each with its place in its document: whole even
//! where a passage cut one off, never across a paragraph, cut at words when very long, carried
//! on over a list or code block an open sentence introduces, and led by a term heading that the
//! sentence defines. An answer in the default mode is made of these and nothing else.

use super::terms::code_like;
use crate::library::StoredDocument;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use unicode_segmentation::UnicodeSegmentation;

/// One sentence of a retrieved passage, as it stands in its document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sentence {
    /// Index of the retrieved passage it came from (0-based, in retrieval order).
    pub source: usize,
    pub doc: String,
    /// Byte range in the document's extracted text: `text == doc.text[start..end]`.
    pub start: usize,
    pub end: usize,
    pub text: String,
    /// The heading above it, if its document has headings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading: Option<String>,
    /// Where its heading starts, when the heading stands right above it and names a term the
    /// sentence defines (`--shuffle`, then "Runs the tests in random order"): the term is the
    /// answer to "which option ...?", so a quote of the sentence starts there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead: Option<usize>,
}

/// Sentences are cut at this many bytes (at a word boundary): a quote is something to read in
/// one go, and code blocks or tables extracted as one "sentence" are not.
const MAX_SENTENCE_BYTES: usize = 400;

/// Sentences shorter than this (in letters and digits) are left out: "Yes.", "1.", a lone name.
const MIN_SENTENCE_CHARS: usize = 12;

/// The sentences of each passage `(source, doc, start, end)`, whole even where the passage cut one off,
/// never crossing a paragraph. A sentence in two overlapping passages is kept once, under the
/// better-ranked passage.
pub fn sentences(passages: &[(usize, &StoredDocument, usize, usize)]) -> Vec<Sentence> {
    let mut out: Vec<Sentence> = Vec::new();
    let mut seen: HashSet<(u32, usize)> = HashSet::new();
    for &(source, doc, start, end) in passages {
        // The heading met last, when it names a term: where it starts, and its block.
        let mut term: Option<(usize, usize)> = None;
        // A term heading just before the passage still leads the sentences under it.
        let first = doc.blocks.iter().rposition(|b| b.end <= start).unwrap_or(0);
        for (b, block) in doc.blocks.iter().enumerate().skip(first).take_while(|(_, b)| b.start < end) {
            // Short pieces too: a term heading ("--dry-run") is often shorter than a sentence.
            for (s, e) in split_with(&doc.text, block.start, block.end, 1) {
                // A heading names a topic; it answers nothing by itself.
                if block.heading.as_deref().is_some_and(|h| h.trim() == doc.text[s..e].trim()) {
                    term = names_term(&doc.text[s..e]).then_some((s, b));
                    continue;
                }
                if doc.text[s..e].chars().filter(|c| c.is_alphanumeric()).count() < MIN_SENTENCE_CHARS {
                    continue;
                }
                // The paragraph right under the term defines it.
                let lead = term.filter(|&(hs, hb)| hb + 1 == b && s - hs <= LEAD_BYTES).map(|(hs, _)| hs);
                if e <= start || s >= end || !seen.insert((doc.id, s)) {
                    continue;
                }
                out.push(Sentence {
                    source,
                    doc: doc.name.clone(),
                    start: s,
                    end: e,
                    text: doc.text[s..e].to_string(),
                    heading: block.heading.clone(),
                    lead,
                });
            }
        }
    }
    out
}

/// A quote that ends open ("you can run", "the options are:") is carried on over at most this
/// many following pieces (sentences, lines of a code block, list items) ...
const CARRY_PIECES: usize = 8;

/// ... and this many bytes.
const CARRY_BYTES: usize = 240;

/// Whether a piece of text ends a thought.
fn closed(text: &str) -> bool {
    text.trim_end().ends_with(['.', '!', '?', '"', '\'', '”', '’', ')'])
}

/// Where a quote of `doc` ending at `end` should end: there, when it ends a thought; otherwise
/// after the pieces that follow it up to the first that does (or a heading, or the limits), so
/// that "The following attributes must now be marked as unsafe:" comes with its list.
pub fn carry(doc: &StoredDocument, end: usize) -> usize {
    let mut to = end;
    let mut pieces = 0;
    for block in doc.blocks.iter().filter(|b| b.end > end) {
        for (s, e) in split_with(&doc.text, block.start.max(end), block.end, 1) {
            let text = &doc.text[to..e];
            if closed(&doc.text[..to])
                || pieces == CARRY_PIECES
                || e - end > CARRY_BYTES
                || !doc.text[to..s].trim().is_empty()
                || block.heading.as_deref().is_some_and(|h| h.trim() == text.trim())
            {
                return to;
            }
            to = e;
            pieces += 1;
        }
    }
    to
}

/// Sentence ranges of `text[start..end]`, trimmed. Besides sentence ends, a line break starts a
/// new sentence when the line before has no end punctuation and the next line starts like a new
/// item (a capital, a digit, a list mark): headings, list items and table rows in extracted text.
/// Pieces of fewer than `min_chars` letters and digits are left out.
fn split_with(text: &str, start: usize, end: usize, min_chars: usize) -> Vec<(usize, usize)> {
    let mut pieces = Vec::new();
    let block = &text[start..end];
    for (off, sentence) in block.split_sentence_bound_indices() {
        let mut line_start = 0;
        for (i, _) in sentence.match_indices('\n') {
            let before = sentence[line_start..i].trim_end();
            let after = sentence[i + 1..].trim_start();
            let ends = before.ends_with(|c: char| ".!?:;".contains(c));
            let starts_item =
                after.starts_with(|c: char| c.is_uppercase() || c.is_ascii_digit() || "-*•#|".contains(c));
            if ends || starts_item || before.is_empty() {
                pieces.push((start + off + line_start, start + off + i));
                line_start = i + 1;
            }
        }
        pieces.push((start + off + line_start, start + off + sentence.len()));
    }
    let mut out = Vec::new();
    for (s, e) in pieces {
        let piece = &text[s..e];
        let lead = piece.len() - without_marks(piece).len();
        let trail = piece.len() - piece.trim_end().len();
        let (mut s, e) = (s + lead, e - trail);
        if e <= s {
            continue;
        }
        // Over-long pieces are cut at word boundaries.
        while e - s > MAX_SENTENCE_BYTES {
            let mut cut = s + MAX_SENTENCE_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let cut = text[s..cut].rfind(char::is_whitespace).map_or(cut, |i| s + i);
            if cut <= s {
                break;
            }
            push_piece(text, s, cut, min_chars, &mut out);
            s = cut + (text[cut..].len() - text[cut..].trim_start().len());
        }
        push_piece(text, s, e, min_chars, &mut out);
    }
    out
}

/// `piece` without the whitespace and list marks ("- ", "* ", "•") it starts with; a flag's
/// dashes ("--dry-run") stay.
fn without_marks(piece: &str) -> &str {
    let mut rest = piece;
    loop {
        let trimmed = rest.trim_start();
        let unmarked = trimmed.strip_prefix(['*', '•']).or_else(|| {
            let dashes = trimmed.trim_start_matches('-');
            (dashes.len() < trimmed.len() && dashes.starts_with(char::is_whitespace)).then_some(dashes)
        });
        match unmarked {
            Some(r) => rest = r,
            None => return trimmed,
        }
    }
}

fn push_piece(text: &str, s: usize, e: usize, min_chars: usize, out: &mut Vec<(usize, usize)>) {
    let piece = text[s..e].trim_end();
    if piece.chars().filter(|c| c.is_alphanumeric()).count() >= min_chars {
        out.push((s, s + piece.len()));
    }
}

/// A term heading leads the sentences of the paragraph under it that start within this many bytes
/// of it: the quote runs from the heading to the sentence.
const LEAD_BYTES: usize = 300;

/// Whether a heading names a term that the text under it defines: a few words, one of them
/// code.
fn names_term(heading: &str) -> bool {
    let words: Vec<&str> = heading.split_whitespace().collect();
    (1..=4).contains(&words.len()) && words.iter().any(|w| code_like(w))
}

/// A document as the library stores it, from text, for tests.
#[cfg(test)]
pub(crate) fn stored(name: &str, text: &str) -> StoredDocument {
    use crate::ingest::{ingest, Format};
    let doc = ingest(name, text.as_bytes()).unwrap();
    StoredDocument { id: 0, name: doc.name, format: Format::Text, text: doc.text, blocks: doc.blocks, slots: vec![] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{ingest, Format};

    #[test]
    fn sentences_are_verbatim_whole_and_once() {
        let doc = stored(
            "a.txt",
            "Rc<T> is only for single-threaded use. Arc<T> is its atomic twin.\n\nA heading line here\n\nThe next paragraph starts here. It goes on a while.",
        );
        let cut_mid_sentence = doc.text.find("atomic").unwrap();
        let all = sentences(&[(0, &doc, 0, cut_mid_sentence), (1, &doc, 0, doc.text.len())]);
        let texts: Vec<&str> = all.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Rc<T> is only for single-threaded use.",
                "Arc<T> is its atomic twin.",
                "A heading line here",
                "The next paragraph starts here.",
                "It goes on a while."
            ]
        );
        for s in &all {
            assert_eq!(&doc.text[s.start..s.end], s.text);
        }
        // Both whole sentences of the cut passage belong to it.
        assert_eq!(all[1].source, 0);
        assert_eq!(all[2].source, 1);
    }

    #[test]
    fn list_marks_go_and_flags_stay() {
        assert_eq!(without_marks("  - item"), "item");
        assert_eq!(without_marks("* • item"), "item");
        assert_eq!(without_marks("--dry-run"), "--dry-run");
        assert_eq!(without_marks("-O"), "-O");
    }

    #[test]
    fn an_open_quote_is_carried_over_its_list_and_no_further() {
        let doc = stored("d.md", "The supported systems are:\n\n- ext4\n- xfs\n\n## Next\n\nMore text here. And more.");
        let all = sentences(&[(0, &doc, 0, doc.text.len())]);
        let intro = all.iter().find(|s| s.text.starts_with("The supported")).unwrap();
        let end = carry(&doc, intro.end);
        assert!(doc.text[intro.start..end].ends_with("xfs"), "{:?}", &doc.text[intro.start..end]);
        // A sentence that ends its thought is not carried.
        let more = all.iter().find(|s| s.text.starts_with("More text")).unwrap();
        assert_eq!(carry(&doc, more.end), more.end);
    }

    #[test]
    fn a_term_heading_leads_the_paragraph_that_defines_it() {
        let doc = ingest("e.html", b"<h2>Options</h2><h3>--dry-run</h3><p>Prints every change and writes nothing.</p><h3>Plain words here</h3><p>Some other paragraph of text.</p>").unwrap();
        let doc = StoredDocument {
            id: 0,
            name: doc.name,
            format: Format::Html,
            text: doc.text,
            blocks: doc.blocks,
            slots: vec![],
        };
        let all = sentences(&[(0, &doc, 0, doc.text.len())]);
        let defined = all.iter().find(|s| s.text.starts_with("Prints")).unwrap();
        assert_eq!(
            &doc.text[defined.lead.unwrap()..defined.end],
            "--dry-run\n\nPrints every change and writes nothing."
        );
        assert_eq!(all.iter().find(|s| s.text.starts_with("Some other")).unwrap().lead, None);
        assert!(code_like("MachineApplicable") && code_like("opt-level=3") && code_like("no_mangle"));
        assert!(!code_like("packed") && !code_like("Rust"));
    }

    #[test]
    fn long_sentences_are_cut_at_words() {
        let long = "word ".repeat(200);
        let doc = stored("b.txt", &long);
        let all = sentences(&[(0, &doc, 0, doc.text.len())]);
        assert!(all.len() > 1);
        for s in &all {
            assert!(s.text.len() <= MAX_SENTENCE_BYTES && !s.text.ends_with(' ') && !s.text.starts_with(' '));
            assert_eq!(&doc.text[s.start..s.end], s.text);
        }
    }
}
