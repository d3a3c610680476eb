//! Evidence: the sentences of the retrieved passages, each with its place in its document, and
//! how likely each is to answer the question.
//!
//! An answer in the default mode is made of these sentences and nothing else, so the quality of
//! an answer is mostly decided here. A sentence is scored from a few features that a teacher can
//! read off the teaching view (meaning similarity, shared rare words, whether the question's
//! kind of answer — a number, a name — is there), combined by a logistic model whose weights were
//! fitted on held-out SQuAD articles by `pocketrag calibrate` (see [`RANK_WEIGHTS`]).

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
    /// +1 when the question asks for a number or a name and the sentence has one the question
    /// does not, -1 when it has none, 0 when the question asks for neither.
    pub kind: f32,
    /// Share of the sentence's content words that are not in the question: a sentence that only
    /// repeats the question (a heading, say) answers nothing.
    pub novelty: f32,
}

impl Features {
    pub const NAMES: [&'static str; 9] =
        ["similarity", "overlap", "context_overlap", "missing", "unmatched", "passage", "rank", "kind", "novelty"];

    pub fn values(&self) -> [f32; 9] {
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
        ]
    }
}

/// Logistic weights (bias first, then one per [`Features::NAMES`]) for "this sentence contains
/// the answer". Fitted by `pocketrag calibrate` on the SQuAD 2.0 calibration articles (never on
/// the articles we report); the command prints this table.
pub const RANK_WEIGHTS: [f32; 10] = [-5.790, 2.794, 2.533, 1.316, 0.874, -1.632, 1.033, 0.558, 0.690, 0.350];

/// Logistic weights (bias first, then one per [`GateFeatures::NAMES`]) for "the best sentence
/// answers the question". Fitted like [`RANK_WEIGHTS`], on the answerable and unanswerable
/// questions of the calibration articles plus near misses made from every second answerable
/// one by taking its answer out of what retrieval finds: SQuAD 2.0's own unanswerable questions
/// are written to look answerable from the paragraph, which is not the usual way a user's
/// documents fail to answer. Made by
/// `pocketrag calibrate ../shared/data/squad/squad2-dev-16-articles.json --every 2 --near-miss-every 2`.
pub const GATE_WEIGHTS: [f32; 11] = [-2.766, 0.739, 0.267, 0.074, 0.130, -0.806, 2.246, 0.137, -0.084, 0.442, 0.465];

/// The gate answers when its probability reaches this; chosen on the calibration articles so
/// that it abstains on at most 15 % of their answerable questions.
pub const GATE_THRESHOLD: f32 = 0.230;

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
    /// The best context overlap among the top three sentences.
    pub coverage: f32,
    /// The best passage's similarity.
    pub passage: f32,
    /// How far the best sentence's score stands above the second's.
    pub margin: f32,
}

impl GateFeatures {
    pub const NAMES: [&'static str; 10] = [
        "best",
        "best_overlap",
        "best_context_overlap",
        "best_missing",
        "best_unmatched",
        "best_similarity",
        "best_kind",
        "coverage",
        "passage",
        "margin",
    ];

    pub fn values(&self) -> [f32; 10] {
        [
            self.best,
            self.best_overlap,
            self.best_context_overlap,
            self.best_missing,
            self.best_unmatched,
            self.best_similarity,
            self.best_kind,
            self.coverage,
            self.passage,
            self.margin,
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
            coverage: ranked.iter().take(3).map(|s| s.features.context_overlap).fold(0.0, f32::max),
            passage: ranked.iter().map(|s| s.features.passage).fold(0.0, f32::max),
            margin: top.score - second,
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

/// Probability that the documents answer the question, from the ranked evidence.
pub fn support(ranked: &[Scored]) -> f32 {
    if ranked.is_empty() {
        return 0.0;
    }
    logistic(&GATE_WEIGHTS, &GateFeatures::of(ranked).values())
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
        for block in doc.blocks.iter().filter(|b| b.start < end && b.end > start) {
            for (s, e) in split(&doc.text, block.start, block.end) {
                if e <= start || s >= end || !seen.insert((doc.id, s)) {
                    continue;
                }
                // A heading names a topic; it answers nothing.
                if block.heading.as_deref().is_some_and(|h| h.trim() == doc.text[s..e].trim()) {
                    continue;
                }
                out.push(Sentence {
                    source,
                    doc: doc.name.clone(),
                    start: s,
                    end: e,
                    text: doc.text[s..e].to_string(),
                    heading: block.heading.clone(),
                });
            }
        }
    }
    out
}

/// Sentence ranges of `text[start..end]`, trimmed. Besides sentence ends, a line break starts a
/// new sentence when the line before has no end punctuation and the next line starts like a new
/// item (a capital, a digit, a list mark): headings, list items and table rows in extracted text.
fn split(text: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
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
        let lead = piece.len() - piece.trim_start_matches(|c: char| c.is_whitespace() || "-*•".contains(c)).len();
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
            push_piece(text, s, cut, &mut out);
            s = cut + (text[cut..].len() - text[cut..].trim_start().len());
        }
        push_piece(text, s, e, &mut out);
    }
    out
}

fn push_piece(text: &str, s: usize, e: usize, out: &mut Vec<(usize, usize)>) {
    let piece = text[s..e].trim_end();
    if piece.chars().filter(|c| c.is_alphanumeric()).count() >= MIN_SENTENCE_CHARS {
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

/// What the question asks for, as far as its first words tell.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Wants {
    Number,
    Name,
    Other,
}

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
    ]) {
        Wants::Number
    } else if asks(&["who ", "whom ", "whose "]) {
        Wants::Name
    } else {
        Wants::Other
    }
}

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
