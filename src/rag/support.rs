//! Checking what a model wrote against the sources (free mode), and noticing when it loops.
//!
//! A written sentence counts as supported when one sentence of the sources both means nearly
//! the same (embedding similarity) and contains most of its content words: similarity alone
//! passes fluent sentences that swap a name or a number, word overlap alone passes sentences
//! that reuse the source's words to say something else. Only supported sentences get a citation,
//! and the citation quotes the supporting sentence.

use super::evidence;
use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

/// One sentence of a written answer and what the check found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SentenceSupport {
    pub text: String,
    /// Byte range in the answer.
    pub start: usize,
    pub end: usize,
    /// The number `n` of the citation that supports it; None: not found in the documents.
    pub cited: Option<usize>,
    /// Similarity to the closest source sentence, and the share of its content words found there.
    pub similarity: f32,
    pub covered: f32,
}

/// A written sentence at least this similar (cosine) to a source sentence may be supported by
/// it. Only a screen against sentences on another subject, which stay under 0.3: a restatement
/// of part of a longer sentence can score as low as the topic sentence before it (the
/// lighthouse case in tests/end_to_end.rs: under 0.55 against 0.62), so the word check decides.
pub const MIN_SIMILARITY: f32 = 0.35;

/// ... and at least this share of its content words must stand in that source sentence (or its
/// neighbours), so that a changed name or number fails.
pub const MIN_COVERED: f32 = 0.75;

/// The sentences of `answer`, as trimmed byte ranges.
pub fn claims(answer: &str) -> Vec<(usize, usize)> {
    answer
        .split_sentence_bound_indices()
        .filter_map(|(i, s)| {
            let lead = s.len() - s.trim_start().len();
            let t = s.trim();
            (!t.is_empty()).then(|| (i + lead, i + lead + t.len()))
        })
        .collect()
}

/// `text` without citation marks like `[2]` or `[1, 3]`, for comparing with the sources.
pub fn without_marks(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(']') {
            Some(close) if after[..close].chars().all(|c| c.is_ascii_digit() || ", -".contains(c)) => {
                rest = &after[close + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Share of the content words of `claim` found in `quote`; 0 when a number or a name of the
/// claim is not there, because a changed number or name is exactly the error a fluent model
/// makes while every other word still matches.
pub fn covered(claim: &str, quote: &str) -> f32 {
    let own = evidence::content_terms(claim);
    if own.is_empty() {
        return 0.0;
    }
    let there = evidence::content_terms(quote);
    let quote_lower = quote.to_lowercase();
    let exact = claim
        .split_whitespace()
        .skip(1)
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
        .chain(claim.split_whitespace().take(1).filter(|w| w.chars().any(|c| c.is_ascii_digit())))
        .filter(|w| w.chars().any(|c| c.is_ascii_digit()) || w.starts_with(char::is_uppercase))
        .all(|w| quote_lower.contains(&w.to_lowercase()));
    if !exact {
        return 0.0;
    }
    own.iter().filter(|t| there.contains(*t)).count() as f32 / own.len() as f32
}

/// How much of `claim` stands in `quote` itself, to choose the quote among sentences that pass
/// with their neighbours: the share of its content words, plus the share of its numbers (a
/// number is what a reader checks first).
pub fn shared(claim: &str, quote: &str) -> f32 {
    let own = evidence::content_terms(claim);
    let there = evidence::content_terms(quote);
    let share = |pick: &dyn Fn(&String) -> bool| {
        let all: Vec<&String> = own.iter().filter(|t| pick(t)).collect();
        if all.is_empty() {
            0.0
        } else {
            all.iter().filter(|t| there.contains(**t)).count() as f32 / all.len() as f32
        }
    };
    share(&|_| true) + share(&|t| t.chars().any(|c| c.is_ascii_digit()))
}

/// A sentence reduced to what makes two sentences "the same" for repetition: its letters and
/// digits, lower case.
fn key(sentence: &str) -> String {
    without_marks(sentence).chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// Sentences shorter than this (in letters and digits) may repeat: "Yes." twice is no loop.
const MIN_REPEAT_CHARS: usize = 12;

/// When the last finished sentence of `text` repeats an earlier one, the byte offset where the
/// repeat begins (the text before it is the answer to keep).
pub fn repeat_start(text: &str) -> Option<usize> {
    let trimmed = text.trim_end();
    if !trimmed.ends_with(['.', '!', '?', '\n']) && !text.ends_with('\n') {
        return None;
    }
    let pieces = claims(trimmed);
    let (&(s, e), earlier) = pieces.split_last()?;
    let last = key(&trimmed[s..e]);
    if last.chars().count() < MIN_REPEAT_CHARS {
        return None;
    }
    earlier.iter().any(|&(a, b)| key(&trimmed[a..b]) == last).then_some(s)
}

/// A written answer is one to this many sentences, unless the question asks for more.
pub const ANSWER_SENTENCES: usize = 3;

/// Words with which a question asks for more than a short answer.
const ASKS_FOR_MORE: &[&str] =
    &["explain", "describe", "list", "steps", "detail", "detailed", "summarize", "summarise", "overview", "compare"];

/// How many sentences a written answer to `question` may have: [`ANSWER_SENTENCES`], or no
/// limit when the question asks for an explanation, a list or steps.
pub fn sentences_wanted(question: &str) -> Option<usize> {
    let asks_more =
        question.split(|c: char| !c.is_alphanumeric()).any(|w| ASKS_FOR_MORE.contains(&w.to_lowercase().as_str()));
    (!asks_more).then_some(ANSWER_SENTENCES)
}

/// Where `text` ends its `n`-th sentence, when it has just ended it: the cut that keeps `n`
/// sentences.
pub fn sentences_end(text: &str, n: usize) -> Option<usize> {
    let trimmed = text.trim_end();
    if !trimmed.ends_with(['.', '!', '?']) {
        return None;
    }
    let pieces = claims(trimmed);
    (pieces.len() >= n).then(|| pieces[n - 1].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_removed_and_sentences_found() {
        assert_eq!(
            without_marks("Rc is single-threaded [1]. Arc is not [2, 3]."),
            "Rc is single-threaded . Arc is not ."
        );
        assert_eq!(without_marks("an array [a] stays"), "an array [a] stays");
        let text = "  First one. Second one!  Third";
        let c = claims(text);
        let got: Vec<&str> = c.iter().map(|&(s, e)| &text[s..e]).collect();
        assert_eq!(got, ["First one.", "Second one!", "Third"]);
    }

    #[test]
    fn a_repeated_sentence_is_found_where_it_starts() {
        let text = "LoRA trains low-rank matrices [1]. It is cheap. LoRA trains low-rank matrices [2].";
        assert_eq!(repeat_start(text), Some(text.rfind("LoRA").unwrap()));
        assert_eq!(repeat_start("Yes. Yes."), None);
        assert_eq!(repeat_start("LoRA trains low-rank matrices. LoRA trains low-rank"), None);
        assert_eq!(repeat_start("One sentence here. Another sentence here."), None);
    }

    #[test]
    fn answers_stop_at_three_sentences_unless_more_is_asked_for() {
        assert_eq!(sentences_wanted("When was it built?"), Some(ANSWER_SENTENCES));
        assert_eq!(sentences_wanted("Explain how the lamp works"), None);
        assert_eq!(sentences_wanted("List the keepers"), None);
        let text = "One here. Two here. Three here. ";
        assert_eq!(sentences_end(text, 3), Some(text.trim_end().len()));
        assert_eq!(sentences_end("One here. Two here.", 3), None);
        assert_eq!(sentences_end("One here. Two here. Three", 3), None);
        let four = "One here. Two here. Three here. Four.";
        assert_eq!(&four[..sentences_end(four, 3).unwrap()], "One here. Two here. Three here.");
    }

    #[test]
    fn coverage_counts_content_words() {
        assert!(covered("Rc is for single-threaded use", "Rc<T> is only for use in single-threaded scenarios") > 0.9);
        assert!(covered("Arc is for single-threaded use", "Rc<T> is only for use in single-threaded scenarios") < 0.9);
        let quote = "The Harrow Point lighthouse was lit for the first time in 1871.";
        assert!(covered("The lighthouse was first lit in 1871.", quote) > 0.9);
        assert_eq!(covered("The lighthouse was first lit in 1923.", quote), 0.0);
        assert_eq!(covered("The Kessel lighthouse was first lit in 1871.", quote), 0.0);
    }
}
