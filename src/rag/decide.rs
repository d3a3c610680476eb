//! Yes/no questions: the decision a quoted answer opens with.
//!
//! A quote such as "you don't have to rebuild the compiler" answers "Do I have to rebuild the
//! compiler?", but only a reader who spots the "don't" knows which way. The engine states the
//! decision itself, and it takes it from the quote by a rule a reader can check: the answer is
//! "No" when exactly one of question and quote is negated, "Yes" otherwise. Only negations that
//! bear on what the question asks count in the quote ("may not work with other tools" says
//! nothing about whether an option is stable). Antonyms ("only single-threaded" against
//! "between threads") are beyond it; the quote stands beside the decision for the reader.

use super::evidence::content_terms;
use std::collections::HashSet;

/// Words that open a question answered by yes or no.
const OPENERS: &[&str] = &[
    "is", "are", "was", "were", "am", "do", "does", "did", "can", "could", "should", "shall", "will", "would", "has",
    "have", "had", "must", "may", "might",
];

/// Words that negate what follows them.
const NEGATIONS: &[&str] = &["not", "no", "never", "cannot", "neither", "nor", "none", "nothing", "nobody"];

/// Words passed over between a negation and the word it negates ("don't have to rebuild").
const PASSED_OVER: &[&str] =
    &["have", "has", "had", "to", "be", "been", "is", "are", "a", "an", "the", "need", "needs"];

/// Whether `question` is answered by yes or no: it opens with an auxiliary verb ("Is", "Can",
/// "Do") and offers no choice ("Is it A or B?" asks which).
pub fn is_yes_no(question: &str) -> bool {
    let words = words(question);
    words.first().is_some_and(|w| OPENERS.contains(&w.as_str())) && !words.iter().any(|w| w == "or")
}

/// Yes (true) or no (false) for a yes/no `question`, read from `quote`; None for other
/// questions.
pub fn yes_no(question: &str, quote: &str) -> Option<bool> {
    if !is_yes_no(question) {
        return None;
    }
    Some(negated(question) == negates(quote, question))
}

/// Whether `question` is negated (an odd number of negations).
pub fn negated(question: &str) -> bool {
    words(question).iter().filter(|w| is_negation(w)).count() % 2 == 1
}

/// Whether `text` negates what `question` asks about. Two such negations are two statements
/// ("not Windows MSVC and not macOS"), not a double negative.
pub fn negates(text: &str, question: &str) -> bool {
    negations_on(&words(text), &content_terms(question)) > 0
}

/// Lower-case words with "n't" split off as "not": "don't" → "do", "not".
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for w in text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '’')) {
        let w = w.to_lowercase().replace('’', "'");
        let w = w.trim_matches('\'');
        if w.is_empty() {
            continue;
        }
        if let Some(stem) = w.strip_suffix("n't") {
            // "can't" → "ca" + "not"; "won't" → "wo" + "not": the stem does not matter here.
            out.push(stem.to_string());
            out.push("not".to_string());
        } else {
            out.push(w.to_string());
        }
    }
    out
}

fn is_negation(word: &str) -> bool {
    NEGATIONS.contains(&word)
}

/// Negations in `words` whose negated word (the first word after it that carries meaning and is
/// not passed over) is one the question asks about.
fn negations_on(words: &[String], asked: &HashSet<String>) -> usize {
    words
        .iter()
        .enumerate()
        .filter(|(_, w)| is_negation(w))
        .filter(|(i, _)| {
            words[i + 1..]
                .iter()
                .filter(|w| !PASSED_OVER.contains(&w.as_str()) && !is_negation(w))
                .map(|w| content_terms(w))
                .find(|t| !t.is_empty())
                .is_some_and(|t| t.iter().any(|t| asked.contains(t)))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_yes_no_questions() {
        assert!(is_yes_no("Is the -C instrument-coverage option stable?"));
        assert!(is_yes_no("Do I have to rebuild the compiler?"));
        assert!(!is_yes_no("Which edition is the default?"));
        assert!(!is_yes_no("Is it 2015 or 2018?"));
    }

    #[test]
    fn reads_the_decision_from_the_quote() {
        let cases = [
            // A negation on what is asked turns the answer.
            ("Do I have to rebuild the Rust compiler to get AVR support?", "Rust comes with AVR support enabled, you don’t have to rebuild the compiler.", false),
            // A negation elsewhere in the quote does not.
            ("Is the -C instrument-coverage option stable?", "While the -C instrument-coverage option is stable, the profile format may change, and may not work with coverage tools other than ours.", true),
            ("Do boxed slices implement IntoIterator in every edition?", "Boxed slices implement IntoIterator in all editions.", true),
            // A negated question against a plain quote.
            ("Is there any case where transmuting a & into a &mut is not Undefined Behavior?", "Transmuting an & to &mut is always Undefined Behavior.", false),
            ("Can Rc be cloned?", "Rc cannot be cloned across threads.", false),
            ("Is it the default on macOS?", "It is the default elsewhere (not Windows and not macOS).", false),
        ];
        for (q, quote, yes) in cases {
            assert_eq!(yes_no(q, quote), Some(yes), "{q}");
        }
        assert_eq!(yes_no("Which option is stable?", "It is stable."), None);
    }
}
