//! Documents into chunks: the passages that get embedded, retrieved and shown as sources.
//!
//! Chunks follow the document's structure: they never cross a heading or a page, they prefer to
//! end at a paragraph, then at a sentence, and only split inside a sentence when one sentence alone
//! is longer than the budget. Sizes are measured in embedder tokens because that is what the
//! embedder truncates on; consecutive chunks overlap by a sentence or two so a fact that straddles
//! a boundary is still whole in one of them.

use crate::ingest::Document;
use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChunkConfig {
    /// Upper bound on a chunk's length in embedder tokens (all-MiniLM-L6-v2 truncates at 256 and
    /// was trained on 128-token passages).
    pub max_tokens: usize,
    /// How much of the end of one chunk is repeated at the start of the next, in tokens. Whole
    /// sentences only, so the repeat may be shorter.
    pub overlap_tokens: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        ChunkConfig { max_tokens: 128, overlap_tokens: 24 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// Byte range in the document's text.
    pub start: usize,
    pub end: usize,
    pub text: String,
    pub heading: Option<String>,
    pub page: Option<u32>,
    /// Length in embedder tokens, as counted when chunking.
    pub tokens: usize,
}

impl Chunk {
    /// What gets embedded: the heading gives a passage the topic its own words may leave implicit.
    pub fn embedding_text(&self) -> String {
        match &self.heading {
            Some(h) if !self.text.starts_with(h.as_str()) => format!("{h}\n{}", self.text),
            _ => self.text.clone(),
        }
    }
}

/// A piece that is never split further: a sentence, or a run of words from an over-long sentence.
struct Unit {
    start: usize,
    end: usize,
    tokens: usize,
    /// Index of the block it came from; a new block is a natural place to end a chunk.
    block: usize,
}

/// Split `doc` into chunks. `count_tokens` measures a piece of text in embedder tokens (without
/// special tokens).
pub fn chunk(doc: &Document, config: &ChunkConfig, count_tokens: &dyn Fn(&str) -> usize) -> Vec<Chunk> {
    let max = config.max_tokens.max(8);
    let mut chunks = Vec::new();
    // Blocks that share heading and page form a group; chunks stay inside a group.
    let mut group: Vec<Unit> = Vec::new();
    let mut group_key: Option<(&Option<String>, Option<u32>)> = None;
    for (bi, block) in doc.blocks.iter().enumerate() {
        let key = (&block.heading, block.page);
        if group_key != Some(key) {
            pack(doc, &group, max, config.overlap_tokens, &mut chunks);
            group.clear();
            group_key = Some(key);
        }
        units(doc, bi, max, count_tokens, &mut group);
    }
    pack(doc, &group, max, config.overlap_tokens, &mut chunks);
    chunks
}

fn units(doc: &Document, bi: usize, max: usize, count: &dyn Fn(&str) -> usize, out: &mut Vec<Unit>) {
    let block = &doc.blocks[bi];
    let text = &doc.text[block.start..block.end];
    for (off, sentence) in text.split_sentence_bound_indices() {
        let trimmed = sentence.trim_end();
        if trimmed.is_empty() {
            continue;
        }
        let start = block.start + off;
        let tokens = count(trimmed);
        if tokens <= max {
            out.push(Unit { start, end: start + trimmed.len(), tokens, block: bi });
            continue;
        }
        // One sentence longer than a chunk (a table row, a code line, a run-on list): cut it at
        // word boundaries.
        let mut piece_start: Option<usize> = None;
        let mut piece_tokens = 0;
        let mut last_end = start;
        for (woff, word) in trimmed.split_word_bound_indices() {
            let t = if word.trim().is_empty() { 0 } else { count(word).max(1) };
            let wstart = start + woff;
            if piece_start.is_some() && piece_tokens + t > max {
                out.push(Unit { start: piece_start.unwrap(), end: last_end, tokens: piece_tokens, block: bi });
                piece_start = None;
                piece_tokens = 0;
            }
            if t == 0 && piece_start.is_none() {
                continue;
            }
            piece_start.get_or_insert(wstart);
            piece_tokens += t;
            last_end = wstart + word.len();
        }
        if let Some(ps) = piece_start {
            out.push(Unit { start: ps, end: last_end, tokens: piece_tokens, block: bi });
        }
    }
}

/// Greedy packing: fill a chunk up to `max` tokens, preferring to stop at a block boundary once it
/// is at least half full, then start the next chunk a few units back for overlap.
fn pack(doc: &Document, units: &[Unit], max: usize, overlap: usize, out: &mut Vec<Chunk>) {
    let mut i = 0;
    while i < units.len() {
        let mut j = i;
        let mut tokens = 0;
        while j < units.len() && (j == i || tokens + units[j].tokens <= max) {
            if j > i && units[j].block != units[j - 1].block && tokens * 2 >= max {
                // A paragraph ends here and the chunk is already substantial.
                let rest: usize = units[j..].iter().take_while(|u| u.block == units[j].block).map(|u| u.tokens).sum();
                if tokens + rest > max {
                    break;
                }
            }
            tokens += units[j].tokens;
            j += 1;
        }
        let (start, end) = (units[i].start, units[j - 1].end);
        let block = &doc.blocks[units[i].block];
        out.push(Chunk {
            start,
            end,
            text: doc.text[start..end].to_string(),
            heading: block.heading.clone(),
            page: block.page,
            tokens,
        });
        if j >= units.len() {
            break;
        }
        // Step back over whole units for the overlap, but always make progress.
        let mut back = j;
        let mut kept = 0;
        while back > i + 1 && kept + units[back - 1].tokens <= overlap {
            back -= 1;
            kept += units[back].tokens;
        }
        i = back;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::ingest;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    #[test]
    fn respects_budget_and_covers_everything() {
        let para = (0..30).map(|i| format!("Sentence number {i} has some words.")).collect::<Vec<_>>().join(" ");
        let doc = ingest("a.txt", para.as_bytes()).unwrap();
        let cfg = ChunkConfig { max_tokens: 20, overlap_tokens: 6 };
        let chunks = chunk(&doc, &cfg, &words);
        assert!(chunks.len() > 5);
        for c in &chunks {
            assert!(c.tokens <= 20, "{c:?}");
            assert_eq!(c.text, &doc.text[c.start..c.end]);
        }
        // Consecutive chunks overlap, and together they cover the text.
        for w in chunks.windows(2) {
            assert!(w[1].start < w[0].end, "no overlap between {:?} and {:?}", w[0], w[1]);
        }
        assert_eq!(chunks[0].start, 0);
        assert_eq!(chunks.last().unwrap().end, doc.text.len());
    }

    #[test]
    fn never_crosses_a_heading() {
        let md = "# A\n\nalpha one. alpha two.\n\n# B\n\nbeta one. beta two.\n";
        let doc = ingest("x.md", md.as_bytes()).unwrap();
        let chunks = chunk(&doc, &ChunkConfig { max_tokens: 100, overlap_tokens: 10 }, &words);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].heading.as_deref(), Some("A"));
        assert!(chunks[0].text.contains("alpha two") && !chunks[0].text.contains("beta"));
        assert_eq!(chunks[1].heading.as_deref(), Some("B"));
    }

    #[test]
    fn splits_a_giant_sentence() {
        let s = "word ".repeat(95);
        let doc = ingest("g.txt", s.as_bytes()).unwrap();
        let chunks = chunk(&doc, &ChunkConfig { max_tokens: 20, overlap_tokens: 0 }, &words);
        assert_eq!(chunks.len(), 5);
        assert!(chunks.iter().all(|c| c.tokens <= 20));
    }
}
