//! The words of questions and sentences as the evidence scorer compares them: which carry
//! meaning, how they are normalised, which look like code, and what kind of answer a question's
//! words ask for.

use crate::index::bm25;
use std::collections::HashSet;

/// Words too common to say what a question is about.
pub(crate) const STOPWORDS: &[&str] = &[
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
pub(crate) fn normal(term: &str) -> String {
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

/// What the question asks for, as far as its words tell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Wants {
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

pub(crate) fn wants(question: &str) -> Wants {
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
