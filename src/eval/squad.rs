//! SQuAD-format question sets (SQuAD 1.1 / 2.0, SQuADShifts): reading them, turning their
//! articles into documents, and the official answer metrics (exact match and token F1 after
//! SQuAD's normalisation), plus "contains": whether a gold answer stands inside a longer answer,
//! which is the fair test for an answer made of whole quoted sentences.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::HashMap;

/// How the 16 SQuAD 2.0 dev articles in `../shared/data/squad` are split, so that no article is
/// both fitted on and reported on: the evidence ranker and the support gate are calibrated on
/// these (`pocketrag calibrate`)...
pub const CALIBRATION_ARTICLES: &str = "Computational_complexity_theory,1973_oil_crisis,Yuan_dynasty,Islamism";
/// ...and answers are measured on these (`pocketrag eval --format squad`). The other 7 are free
/// for training.
pub const REPORT_ARTICLES: &str = "Normans,Steam_engine,Harvard_University,Immune_system,Force";

#[derive(Debug, Clone)]
pub struct Article {
    pub title: String,
    pub paragraphs: Vec<Paragraph>,
}

#[derive(Debug, Clone)]
pub struct Paragraph {
    pub context: String,
    pub qas: Vec<Qa>,
}

#[derive(Debug, Clone)]
pub struct Qa {
    pub id: String,
    pub question: String,
    /// Gold answer texts; empty for an unanswerable question.
    pub answers: Vec<String>,
}

impl Qa {
    pub fn answerable(&self) -> bool {
        !self.answers.is_empty()
    }
}

#[derive(Deserialize)]
struct FileJson {
    data: Vec<ArticleJson>,
}

#[derive(Deserialize)]
struct ArticleJson {
    title: String,
    paragraphs: Vec<ParagraphJson>,
}

#[derive(Deserialize)]
struct ParagraphJson {
    context: String,
    qas: Vec<QaJson>,
}

#[derive(Deserialize)]
struct QaJson {
    id: String,
    question: String,
    #[serde(default)]
    answers: Vec<AnswerJson>,
    #[serde(default)]
    is_impossible: bool,
}

#[derive(Deserialize)]
struct AnswerJson {
    text: String,
}

/// Read a SQuAD-format file. `what` names it in errors.
pub fn read(bytes: &[u8], what: &str) -> Result<Vec<Article>> {
    let file: FileJson =
        serde_json::from_slice(bytes).map_err(|e| Error::Input(format!("{what}: not a SQuAD-format file: {e}")))?;
    Ok(file
        .data
        .into_iter()
        .map(|a| Article {
            title: a.title,
            paragraphs: a
                .paragraphs
                .into_iter()
                .map(|p| Paragraph {
                    context: p.context,
                    qas: p
                        .qas
                        .into_iter()
                        .map(|q| Qa {
                            id: q.id,
                            question: q.question,
                            answers: if q.is_impossible {
                                vec![]
                            } else {
                                let mut seen = Vec::new();
                                for a in q.answers {
                                    if !seen.contains(&a.text) {
                                        seen.push(a.text);
                                    }
                                }
                                seen
                            },
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect())
}

/// An article as a user would have it: one text file, paragraphs separated by blank lines.
pub fn document(article: &Article) -> (String, String) {
    let text: Vec<&str> = article.paragraphs.iter().map(|p| p.context.trim()).collect();
    (format!("{}.txt", article.title), text.join("\n\n"))
}

/// SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces.
pub fn normalize(text: &str) -> String {
    let lower: String =
        text.to_lowercase().chars().map(|c| if c.is_alphanumeric() || c.is_whitespace() { c } else { ' ' }).collect();
    lower.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).collect::<Vec<_>>().join(" ")
}

pub fn exact_match(prediction: &str, golds: &[String]) -> bool {
    let p = normalize(prediction);
    golds.iter().any(|g| normalize(g) == p)
}

/// Best token F1 of `prediction` against any gold answer.
pub fn f1(prediction: &str, golds: &[String]) -> f64 {
    let p = normalize(prediction);
    let p_tokens: Vec<&str> = p.split_whitespace().collect();
    golds
        .iter()
        .map(|g| {
            let g = normalize(g);
            let g_tokens: Vec<&str> = g.split_whitespace().collect();
            let mut counts: HashMap<&str, i32> = HashMap::new();
            for t in &g_tokens {
                *counts.entry(t).or_default() += 1;
            }
            let mut same = 0;
            for t in &p_tokens {
                if let Some(c) = counts.get_mut(t).filter(|c| **c > 0) {
                    *c -= 1;
                    same += 1;
                }
            }
            if same == 0 {
                return 0.0;
            }
            let precision = same as f64 / p_tokens.len() as f64;
            let recall = same as f64 / g_tokens.len() as f64;
            2.0 * precision * recall / (precision + recall)
        })
        .fold(0.0, f64::max)
}

/// Whether a gold answer appears in `text`, word-aligned, after normalisation.
pub fn contains(text: &str, golds: &[String]) -> bool {
    let t = format!(" {} ", normalize(text));
    golds.iter().map(|g| normalize(g)).any(|g| !g.is_empty() && t.contains(&format!(" {g} ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_follow_squad_normalisation() {
        let golds = vec!["the Normans".to_string(), "Norman people".to_string()];
        assert!(exact_match("Normans.", &golds));
        assert!(!exact_match("the Norman", &golds));
        assert!((f1("Norman people of France", &golds) - 2.0 * 0.5 / 1.5).abs() < 1e-9);
        assert!(contains("They were called the Normans, a people of France.", &golds));
        // Word-aligned: "Normanslaw" does not contain "Normans".
        assert!(!contains("Normanslaw", &golds));
        assert!(!contains("anything", &[]));
    }

    #[test]
    fn reads_squad2_with_unanswerable_questions() {
        let json = r#"{"version":"v2.0","data":[{"title":"T","paragraphs":[{"context":"C one.","qas":[
            {"id":"1","question":"Q?","answers":[{"text":"one","answer_start":2},{"text":"one","answer_start":2}],"is_impossible":false},
            {"id":"2","question":"R?","answers":[],"plausible_answers":[{"text":"C","answer_start":0}],"is_impossible":true}]}]}]}"#;
        let articles = read(json.as_bytes(), "test").unwrap();
        let qas = &articles[0].paragraphs[0].qas;
        assert_eq!(qas[0].answers, vec!["one".to_string()]);
        assert!(!qas[1].answerable());
        assert_eq!(document(&articles[0]), ("T.txt".to_string(), "C one.".to_string()));
        assert!(read(b"[]", "x").is_err());
    }
}
