//! Evidence: the sentences of the retrieved passages, each with its place in its document, and
//! how likely each is to answer the question.
//!
//! An answer in the default mode is made of these sentences and nothing else, so the quality of
//! an answer is mostly decided here. A sentence is scored from a few features that a teacher can
//! read off the teaching view (meaning similarity, shared rare words, whether the question's
//! kind of answer — a number, a name — is there), combined by a logistic model whose weights were
//! fitted on held-out SQuAD articles by `pocketrag calibrate` (see [`RANK_WEIGHTS`]).

use super::decide;
use crate::index::bm25::{self, Bm25};
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

/// A sentence with what the scorer saw and concluded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scored {
    #[serde(flatten)]
    pub sentence: Sentence,
    pub features: Features,
    /// The scorer's probability that this sentence answers the question.
    pub score: f32,
}

/// What the scorer knows about one sentence. Every value is in about [0, 1] (or [-1, 1]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// Cosine similarity of question and sentence embeddings.
    pub similarity: f32,
    /// Share of the question's content words (weighted by rarity) that the sentence contains.
    pub overlap: f32,
    /// The same over the sentence and its neighbours: questions often take their words from
    /// the sentence before the one with the answer.
    pub context_overlap: f32,
    /// Rarity (0..1) of the rarest question word found neither in the sentence nor its
    /// neighbours. A question about something the passage never names is usually not answered
    /// by it.
    pub missing: f32,
    /// Share of the question's content words (unweighted) found neither in the sentence nor its
    /// neighbours.
    pub unmatched: f32,
    /// Cosine similarity of the question and the whole retrieved passage.
    pub passage: f32,
    /// 1 for the best-ranked passage, 1/2 for the next, ...
    pub rank: f32,
    /// +1 when the question asks for a number, a name or a term of code (an option, a lint, a
    /// type) and the sentence has one the question does not, -1 when it has none, 0 when the
    /// question asks for none of these.
    pub kind: f32,
    /// Share of the sentence's content words that are not in the question: a sentence that only
    /// repeats the question (a heading, say) answers nothing.
    pub novelty: f32,
    /// 1 when the sentence negates what a question without a negation asks about ("not Windows
    /// MSVC" against "the default on Windows MSVC"), else 0. Yes/no questions, which the
    /// negation answers, get 0, and so do negated questions: users write "a payload that is
    /// not a string" as naturally as the source does, while SQuAD 2.0's unanswerable questions
    /// were often made by adding a "not", which a gate fitted on them would learn instead.
    #[serde(default)]
    pub negated: f32,
    /// For the best sentence only, when the generator reads it: how much less likely the
    /// question's least supported token becomes after the sentence ([`super::reading`]). Read
    /// by the gate, not the ranker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reading: Option<f32>,
}

impl Features {
    pub const NAMES: [&'static str; 10] = [
        "similarity",
        "overlap",
        "context_overlap",
        "missing",
        "unmatched",
        "passage",
        "rank",
        "kind",
        "novelty",
        "negated",
    ];

    pub fn values(&self) -> [f32; 10] {
        [
            self.similarity,
            self.overlap,
            self.context_overlap,
            self.missing,
            self.unmatched,
            self.passage,
            self.rank,
            self.kind,
            self.novelty,
            self.negated,
        ]
    }
}

/// Logistic weights (bias first, then one per [`Features::NAMES`]) for "this sentence contains
/// the answer". Fitted by `pocketrag calibrate` on the SQuAD 2.0 calibration articles (never on
/// the articles we report); the command prints this table.
pub const RANK_WEIGHTS: [f32; 11] = [-5.758, 2.802, 2.567, 1.321, 0.856, -1.665, 1.078, 0.565, 0.440, 0.358, -0.470];

/// Logistic weights (bias first, then one per [`GateFeatures::NAMES`]) for "the best sentence
/// answers the question". Fitted like [`RANK_WEIGHTS`], on the answerable and unanswerable
/// questions of the calibration articles plus near misses made from every second answerable
/// one by taking its answer out of what retrieval finds: SQuAD 2.0's own unanswerable questions
/// are written to look answerable from the paragraph, which is not the usual way a user's
/// documents fail to answer. Made by
/// `pocketrag calibrate ../shared/data/squad/squad2-dev-16-articles.json --every 2 --near-miss-every 2`.
pub const GATE_WEIGHTS: [f32; 13] =
    [-2.693, 0.809, 0.397, -0.003, 0.079, -0.720, 2.177, 0.031, -0.274, -0.205, 0.466, 0.512, 0.0];

/// The gate answers when its probability reaches this; chosen on the calibration articles so
/// that it abstains on at most 15 % of their answerable questions.
pub const GATE_THRESHOLD: f32 = 0.232;

/// What the gate looks at: the best sentence, and how far it stands out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GateFeatures {
    /// The best sentence's score.
    pub best: f32,
    pub best_overlap: f32,
    pub best_context_overlap: f32,
    pub best_missing: f32,
    pub best_unmatched: f32,
    pub best_similarity: f32,
    pub best_kind: f32,
    pub best_negated: f32,
    /// The best context overlap among the top three sentences.
    pub coverage: f32,
    /// The best passage's similarity.
    pub passage: f32,
    /// How far the best sentence's score stands above the second's.
    pub margin: f32,
    /// The generator's reading of the best sentence ([`Features::reading`]); 0 without one.
    #[serde(default)]
    pub reading: f32,
}

impl GateFeatures {
    pub const NAMES: [&'static str; 12] = [
        "best",
        "best_overlap",
        "best_context_overlap",
        "best_missing",
        "best_unmatched",
        "best_similarity",
        "best_kind",
        "best_negated",
        "coverage",
        "passage",
        "margin",
        "reading",
    ];

    pub fn values(&self) -> [f32; 12] {
        [
            self.best,
            self.best_overlap,
            self.best_context_overlap,
            self.best_missing,
            self.best_unmatched,
            self.best_similarity,
            self.best_kind,
            self.best_negated,
            self.coverage,
            self.passage,
            self.margin,
            self.reading,
        ]
    }

    pub fn of(ranked: &[Scored]) -> GateFeatures {
        let Some(top) = ranked.first() else { return GateFeatures::default() };
        let second = ranked.get(1).map_or(0.0, |s| s.score);
        GateFeatures {
            best: top.score,
            best_overlap: top.features.overlap,
            best_context_overlap: top.features.context_overlap,
            best_missing: top.features.missing,
            best_unmatched: top.features.unmatched,
            best_similarity: top.features.similarity,
            best_kind: top.features.kind,
            best_negated: top.features.negated,
            coverage: ranked.iter().take(3).map(|s| s.features.context_overlap).fold(0.0, f32::max),
            passage: ranked.iter().map(|s| s.features.passage).fold(0.0, f32::max),
            margin: top.score - second,
            // The engine reads only the best sentence; calibration may re-rank after reading.
            reading: ranked.iter().find_map(|s| s.features.reading).unwrap_or(0.0),
        }
    }
}

pub fn logistic(weights: &[f32], x: &[f32]) -> f32 {
    let z = weights[0] + weights[1..].iter().zip(x).map(|(w, v)| w * v).sum::<f32>();
    1.0 / (1.0 + (-z).exp())
}

/// Score `ranked` again with other rank weights (calibration tries them), best first.
pub fn rescore(ranked: &mut [Scored], weights: &[f32]) {
    for s in ranked.iter_mut() {
        s.score = logistic(weights, &s.features.values());
    }
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.sentence.start.cmp(&b.sentence.start)));
}

/// A fitted gate: its weights and the probability at which it answers.
#[derive(Debug, Clone, Copy)]
pub struct Scorer {
    pub gate: &'static [f32],
    pub threshold: f32,
}

/// The gate without the generator's reading (its weight for `reading` is 0): the default, and
/// the only one for an engine whose generator is missing or on the GPU.
pub const PLAIN: Scorer = Scorer { gate: &GATE_WEIGHTS, threshold: GATE_THRESHOLD };

/// The gate with the generator's reading, fitted by the same command on the same articles with
/// the generator loaded (`pocketrag calibrate ../shared/data/squad/squad2-dev-16-articles.json
/// --every 2 --near-miss-every 2 --read`). Its weight for `reading` is
/// small: the near misses, half of the unanswerable questions it is fitted on, lack the answer
/// but not the question's words, which is what the reading sees.
pub const READ: Scorer = Scorer { gate: &READ_GATE_WEIGHTS, threshold: READ_GATE_THRESHOLD };
pub const READ_GATE_WEIGHTS: [f32; 13] =
    [-2.676, 0.791, 0.396, 0.002, 0.094, -0.697, 2.174, 0.033, -0.279, -0.189, 0.474, 0.528, 0.051];
pub const READ_GATE_THRESHOLD: f32 = 0.232;

/// Probability that the documents answer the question, from the ranked evidence.
pub fn support(ranked: &[Scored], scorer: &Scorer) -> f32 {
    if ranked.is_empty() {
        return 0.0;
    }
    logistic(scorer.gate, &GateFeatures::of(ranked).values())
}

/// At most this many sentences make a quoted answer: one usually answers, a second often holds
/// what the first leaves out (the question took its words from one sentence, the answer stands
/// in the next), and past three a user is reading the passage, not an answer.
pub const QUOTE_MAX: usize = 3;

/// A further sentence joins the answer when its score is at least this share of the best one's.
/// Chosen on the calibration articles (`pocketrag calibrate` prints the trade-off).
pub const QUOTE_RELATIVE: f32 = 0.7;

/// The sentences a quoted answer is made of, best first: the best, and those close behind it.
pub fn select(ranked: &[Scored], relative: f32) -> Vec<&Scored> {
    let Some(top) = ranked.first() else { return vec![] };
    let mut out = vec![top];
    out.extend(ranked[1..].iter().filter(|s| s.score >= relative * top.score).take(QUOTE_MAX - 1));
    out
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

/// Words too common to say what a question is about.
const STOPWORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been", "before", "being",
    "but", "by", "can", "could", "did", "do", "does", "doing", "done", "for", "from", "had", "has", "have", "he",
    "her", "his", "how", "i", "if", "in", "into", "is", "it", "its", "many", "may", "me", "more", "most", "much", "my",
    "name", "named", "no", "not", "of", "on", "one", "or", "other", "our", "over", "she", "should", "so", "some",
    "such", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "those", "to", "type",
    "under", "up", "use", "used", "using", "was", "we", "were", "what", "when", "where", "which", "while", "who",
    "whom", "whose", "why", "will", "with", "would", "you", "your",
];

/// A word as the scorer compares it: lower case, with a plural "s", then an "ing" or "ed", then
/// a final "e" dropped, so that "threads" meets "thread" and "trained", "training" and "trains"
/// meet "train". Crude next to a real stemmer, and enough: both sides are cut the same way.
fn normal(term: &str) -> String {
    let mut t = term.to_lowercase();
    if !t.chars().all(|c| c.is_alphabetic()) {
        return t;
    }
    let keeps = |t: &str, suffix: &str| t.ends_with(suffix) && t.chars().count() >= suffix.len() + 3;
    if keeps(&t, "s") && !t.ends_with("ss") {
        t.pop();
    }
    for suffix in ["ing", "ed"] {
        if keeps(&t, suffix) {
            t.truncate(t.len() - suffix.len());
            break;
        }
    }
    if t.ends_with('e') && t.chars().count() > 3 {
        t.pop();
    }
    t
}

/// The words of `text` that carry meaning, normalised as the scorer compares them.
pub fn content_terms(text: &str) -> HashSet<String> {
    bm25::terms(text).filter(|t| !STOPWORDS.contains(&t.as_ref())).map(|t| normal(&t)).collect()
}

/// Whether `word` looks like a term of code rather than prose: a flag (`--shuffle`, `-O`), a
/// path or generic (`IntoIterator::into_iter`, `Rc<T>`), a setting (`opt-level=3`), an
/// identifier (`no_mangle`, `MachineApplicable`, `link-args`).
pub fn code_like(word: &str) -> bool {
    let w = word.trim_matches(|c: char| "\"'“”‘’()[]{},.;:!?`".contains(c));
    if w.chars().count() < 2 || !w.chars().any(char::is_alphabetic) {
        return false;
    }
    let inner_capital = w.chars().skip(1).any(char::is_uppercase) && w.chars().any(char::is_lowercase);
    let kebab = w.contains('-') && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    w.starts_with('-')
        || w.starts_with("#[")
        || ["_", "::", "=", "<"].iter().any(|p| w.contains(p))
        || inner_capital
        || kebab
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

/// What the question asks for, as far as its words tell.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Wants {
    Number,
    Name,
    Code,
    Other,
}

/// Nouns that, after "which" or "what", ask for a term of code.
const CODE_NOUNS: &[&str] = &[
    "option",
    "flag",
    "value",
    "tag",
    "attribute",
    "lint",
    "trait",
    "type",
    "function",
    "macro",
    "keyword",
    "command",
    "crate",
    "setting",
    "argument",
    "variable",
    "field",
    "method",
    "target",
    "syntax",
];

fn wants(question: &str) -> Wants {
    let q = question.trim().to_lowercase();
    let asks = |p: &[&str]| p.iter().any(|w| q.starts_with(w) || q.contains(&format!(" {w}")));
    if asks(&[
        "how many",
        "how much",
        "how long",
        "how old",
        "how far",
        "what year",
        "which year",
        "in what year",
        "what percentage",
        "when ",
        "what version",
        "which version",
        "release version",
        "which release",
        "what release",
        "which rfc",
        "what rfc",
        "rfc number",
        "what number",
        "which month",
        "what month",
        "minimum",
        "maximum",
        "what size",
        "how big",
        "which edition",
    ]) {
        Wants::Number
    } else if asks(&["who ", "whom ", "whose "]) {
        Wants::Name
    } else if asks_for_code(&q) {
        Wants::Code
    } else {
        Wants::Other
    }
}

/// "Which libtest option ...", "what -C split-debuginfo value ...": a code noun within
/// [`CODE_NOUN_REACH`] words after "which" or "what" ("what is the default allocator on this
/// target" asks for a name, not a target).
fn asks_for_code(q: &str) -> bool {
    let words: Vec<&str> = q.split_whitespace().collect();
    words.iter().enumerate().filter(|(_, w)| matches!(**w, "which" | "what")).any(|(i, _)| {
        words[i + 1..].iter().take(CODE_NOUN_REACH).any(|w| {
            let w = w.trim_matches(|c: char| !c.is_alphanumeric());
            CODE_NOUNS.contains(&w) || w.strip_suffix('s').is_some_and(|s| CODE_NOUNS.contains(&s))
        })
    })
}

const CODE_NOUN_REACH: usize = 4;

/// Rarity of `term` in 0..1, from the index's document frequencies.
fn rarity(index: &Bm25, term: &str) -> f32 {
    (index.idf(term) / index.max_idf().max(1e-6)).clamp(0.0, 1.0)
}

/// Score `sentences` for `question`. `similarity[i]` is the cosine between the question and
/// sentence i; `passage_scores[j]` the cosine between the question and passage j. Returns the
/// sentences best first.
pub fn rank(
    question: &str,
    sentences: Vec<Sentence>,
    similarity: &[f32],
    passage_scores: &[f32],
    index: &Bm25,
) -> Vec<Scored> {
    let q_terms: Vec<(String, f32)> = {
        let mut seen = HashSet::new();
        bm25::terms(question)
            .filter(|t| !STOPWORDS.contains(&t.as_ref()))
            .filter_map(|t| {
                let n = normal(&t);
                seen.insert(n.clone()).then(|| {
                    let r = rarity(index, &n);
                    (n, r)
                })
            })
            .collect()
    };
    let q_weight: f32 = q_terms.iter().map(|(_, w)| w).sum::<f32>().max(1e-6);
    let q_set: HashSet<&str> = q_terms.iter().map(|(t, _)| t.as_str()).collect();
    let wanted = wants(question);
    let q_lower = question.to_lowercase();
    let plain = !decide::is_yes_no(question) && !decide::negated(question);
    let term_sets: Vec<HashSet<String>> = sentences.iter().map(|s| content_terms(&s.text)).collect();
    let topic_sets: Vec<HashSet<String>> = sentences
        .iter()
        .map(|s| {
            let name = s.doc.rsplit(['/', '\\']).next().unwrap_or(&s.doc);
            let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
            content_terms(&format!("{} {}", stem.replace(['_', '-'], " "), s.heading.as_deref().unwrap_or("")))
        })
        .collect();
    let mut scored: Vec<Scored> = Vec::with_capacity(sentences.len());
    for (i, sentence) in sentences.iter().cloned().enumerate() {
        let own = &term_sets[i];
        let mut near: HashSet<&str> = own.iter().map(String::as_str).collect();
        for j in [i.wrapping_sub(1), i + 1] {
            if let (Some(other), Some(s)) = (term_sets.get(j), sentences.get(j)) {
                if s.doc == sentence.doc {
                    near.extend(other.iter().map(String::as_str));
                }
            }
        }
        // A question names the topic that the document's name or the heading already names
        // ("the lighthouse" under "Keepers" in lighthouse.md).
        let topic = &topic_sets[i];
        near.extend(topic.iter().map(String::as_str));
        let covered =
            |set: &dyn Fn(&str) -> bool| q_terms.iter().filter(|(t, _)| set(t)).map(|(_, w)| w).sum::<f32>() / q_weight;
        let overlap = covered(&|t| own.contains(t));
        let context_overlap = covered(&|t| near.contains(t));
        let missing = q_terms.iter().filter(|(t, _)| !near.contains(t.as_str())).map(|(_, w)| *w).fold(0.0, f32::max);
        let unmatched = if q_terms.is_empty() {
            0.0
        } else {
            q_terms.iter().filter(|(t, _)| !near.contains(t.as_str())).count() as f32 / q_terms.len() as f32
        };
        let new_words: Vec<&String> = own.iter().filter(|t| !q_set.contains(t.as_str())).collect();
        let novelty = if own.is_empty() { 0.0 } else { new_words.len() as f32 / own.len() as f32 };
        let kind = match wanted {
            Wants::Number => {
                if new_words.iter().any(|t| t.chars().any(|c| c.is_ascii_digit())) {
                    1.0
                } else {
                    -1.0
                }
            }
            Wants::Name => {
                let has_name = sentence.text.split_whitespace().skip(1).any(|w| {
                    w.starts_with(char::is_uppercase)
                        && !q_lower.contains(&w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase())
                });
                if has_name {
                    1.0
                } else {
                    -1.0
                }
            }
            Wants::Code => {
                let lead = sentence.lead.and(sentence.heading.as_deref());
                let words = sentence.text.split_whitespace().chain(lead.into_iter().flat_map(str::split_whitespace));
                let has_code = words.into_iter().any(|w| {
                    let bare = w.trim_matches(|c: char| !c.is_alphanumeric() && c != '-').to_lowercase();
                    code_like(w) && !q_lower.contains(&bare)
                });
                if has_code {
                    1.0
                } else {
                    -1.0
                }
            }
            Wants::Other => 0.0,
        };
        let features = Features {
            similarity: similarity.get(i).copied().unwrap_or(0.0),
            overlap,
            context_overlap,
            missing,
            unmatched,
            passage: passage_scores.get(sentence.source).copied().unwrap_or(0.0),
            rank: 1.0 / (1.0 + sentence.source as f32),
            kind,
            novelty,
            negated: f32::from(u8::from(plain && decide::negates(&sentence.text, question))),
            reading: None,
        };
        scored.push(Scored { sentence, features, score: 0.0 });
    }
    rescore(&mut scored, &RANK_WEIGHTS);
    scored
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{ingest, Format};

    fn stored(name: &str, text: &str) -> StoredDocument {
        let doc = ingest(name, text.as_bytes()).unwrap();
        StoredDocument {
            id: 0,
            name: doc.name,
            format: Format::Text,
            text: doc.text,
            blocks: doc.blocks,
            slots: vec![],
        }
    }

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

    #[test]
    fn the_answering_sentence_ranks_first() {
        let doc = stored(
            "c.txt",
            "The lighthouse at Harrow Point was built in 1871. It is painted white. Its keeper retired in 1950.",
        );
        let all = sentences(&[(0, &doc, 0, doc.text.len())]);
        let mut index = Bm25::default();
        index.add(0, &doc.text);
        index.add(1, "an unrelated passage about bread");
        let ranked = rank("When was the lighthouse at Harrow Point built?", all, &[0.7, 0.3, 0.4], &[0.6], &index);
        assert!(ranked[0].sentence.text.contains("1871"), "{ranked:?}");
        assert!(ranked[0].features.kind > 0.0);
    }
}
