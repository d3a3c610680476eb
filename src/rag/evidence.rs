//! Evidence: the sentences of the retrieved passages, each with its place in its document, and
//! how likely each is to answer the question.
//!
//! An answer in the default mode is made of these sentences and nothing else, so the quality of
//! an answer is mostly decided here. A sentence is scored from a few features that a teacher can
//! read off the teaching view (meaning similarity, shared rare words, whether the question's
//! kind of answer — a number, a name — is there), combined by a logistic model whose weights were
//! fitted on held-out SQuAD articles by `pocketrag calibrate` (see [`RANK_WEIGHTS`]).

use super::decide;
use super::terms::{normal, wants, Wants, STOPWORDS};
use crate::index::bm25::{self, Bm25};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

pub use super::sentences::{carry, sentences, Sentence};
pub use super::terms::{code_like, content_terms};

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
    use crate::rag::sentences::stored;

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
