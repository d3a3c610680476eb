//! Scoring answers to questions over a document collection, asked as a user asks them
//! (`pocketrag eval --format squad|rust-docs`): the whole collection is indexed, every question
//! goes through `Engine::answer`, and the answer text is scored against the gold spans.
//!
//! An answerable question is *correct* when the answer contains a gold span (see
//! [`squad::contains`]); it is *wrong with a citation* when it is answered, cites something, and
//! is not correct. An unanswerable question should be abstained on. Every citation is checked
//! to be verbatim in its document.

use super::squad;
use crate::error::Result;
use crate::rag::{support, Engine, Mode};
use serde::{Deserialize, Serialize};

/// One question; no answers means the documents do not answer it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Question {
    pub id: String,
    pub question: String,
    pub answers: Vec<String>,
    /// Where the set distinguishes kinds ("yes-no", "near-miss", "off-topic").
    pub kind: Option<String>,
}

impl Question {
    pub fn answerable(&self) -> bool {
        !self.answers.is_empty()
    }
}

/// What happened to one question.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub question: String,
    pub kind: Option<String>,
    pub gold: Vec<String>,
    pub mode: Mode,
    pub tuned: bool,
    pub answer: String,
    pub abstained: bool,
    pub support: Option<f32>,
    /// The answer contains a gold span (answerable questions).
    pub correct: bool,
    pub exact_match: f64,
    pub f1: f64,
    pub citations: usize,
    /// Citations whose quote contains a gold span.
    pub quotes_holding_gold: usize,
    /// Citations whose quote is not the document's text at its offsets (must stay 0).
    pub quotes_not_verbatim: usize,
    pub docs: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Scores {
    pub questions: usize,
    pub answerable: usize,
    pub unanswerable: usize,
    /// Shares of answerable questions.
    pub correct: f64,
    pub exact_match: f64,
    pub f1: f64,
    pub wrong_with_citation: f64,
    pub wrongly_abstained: f64,
    /// Share of unanswerable questions abstained on (abstention recall), and the share of all
    /// abstentions that were on unanswerable questions (abstention precision).
    pub abstained_unanswerable: f64,
    pub abstention_precision: f64,
    /// Among citations of answered answerable questions, the share whose quote holds a gold span.
    pub quote_precision: f64,
    pub quotes_not_verbatim: usize,
}

fn share(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 / of as f64
    }
}

/// Ask `q` through the engine in `mode` and score the answer.
pub fn ask(engine: &mut Engine, q: &Question, mode: Mode, k: usize) -> Result<Record> {
    let a = engine.answer(&q.question, mode, k, &mut |_| {}, &|| false)?;
    let text = support::without_marks(&a.answer);
    let answerable = q.answerable();
    let yes_no = q.kind.as_deref() == Some("yes-no");
    let correct = answerable
        && !a.abstained
        && if yes_no {
            // The decision must open the answer: "Yes, ..." / "No, ...".
            let first = squad::normalize(&text);
            q.answers.iter().any(|g| first.split_whitespace().next() == Some(squad::normalize(g).as_str()))
        } else {
            squad::contains(&text, &q.answers)
        };
    let docs = engine.library().documents();
    let verbatim = |c: &crate::rag::Citation| {
        docs.iter().find(|d| d.name == c.doc).and_then(|d| d.text.get(c.start..c.end)) == Some(c.quote.as_str())
    };
    Ok(Record {
        id: q.id.clone(),
        question: q.question.clone(),
        kind: q.kind.clone(),
        gold: q.answers.clone(),
        mode,
        tuned: a.tuned,
        exact_match: f64::from(u8::from(answerable && !a.abstained && squad::exact_match(&text, &q.answers))),
        f1: if answerable && !a.abstained { squad::f1(&text, &q.answers) } else { 0.0 },
        correct,
        abstained: a.abstained,
        support: a.support,
        citations: a.citations.len(),
        quotes_holding_gold: a.citations.iter().filter(|c| answerable && squad::contains(&c.quote, &q.answers)).count(),
        quotes_not_verbatim: a.citations.iter().filter(|c| !verbatim(c)).count(),
        docs: a.citations.iter().map(|c| c.doc.clone()).collect(),
        answer: a.answer,
    })
}

pub fn score(records: &[Record]) -> Scores {
    let answerable: Vec<&Record> = records.iter().filter(|r| !r.gold.is_empty()).collect();
    let unanswerable: Vec<&Record> = records.iter().filter(|r| r.gold.is_empty()).collect();
    let n = answerable.len();
    let sum = |f: &dyn Fn(&Record) -> f64| answerable.iter().map(|r| f(r)).sum::<f64>() / n.max(1) as f64;
    let abstained = records.iter().filter(|r| r.abstained).count();
    let abstained_right = unanswerable.iter().filter(|r| r.abstained).count();
    let answered: Vec<&&Record> = answerable.iter().filter(|r| !r.abstained).collect();
    let cites: usize = answered.iter().map(|r| r.citations).sum();
    Scores {
        questions: records.len(),
        answerable: n,
        unanswerable: unanswerable.len(),
        correct: sum(&|r| f64::from(u8::from(r.correct))),
        exact_match: sum(&|r| r.exact_match),
        f1: sum(&|r| r.f1),
        wrong_with_citation: sum(&|r| f64::from(u8::from(!r.abstained && !r.correct && r.citations > 0))),
        wrongly_abstained: sum(&|r| f64::from(u8::from(r.abstained))),
        abstained_unanswerable: share(abstained_right, unanswerable.len()),
        abstention_precision: share(abstained_right, abstained),
        quote_precision: share(answered.iter().map(|r| r.quotes_holding_gold).sum(), cites),
        quotes_not_verbatim: records.iter().map(|r| r.quotes_not_verbatim).sum(),
    }
}

/// The questions of SQuAD articles (every `every`-th).
pub fn squad_questions(articles: &[squad::Article], every: usize) -> Vec<Question> {
    articles
        .iter()
        .flat_map(|a| a.paragraphs.iter().flat_map(|p| p.qas.iter()))
        .step_by(every.max(1))
        .map(|qa| Question {
            id: qa.id.clone(),
            question: qa.question.clone(),
            answers: qa.answers.clone(),
            kind: None,
        })
        .collect()
}

/// A table row per (mode, scores), for the terminal.
pub fn table(rows: &[(String, Scores)]) -> String {
    let mut out = format!(
        "{:<12} {:>5} {:>8} {:>6} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9}\n",
        "config",
        "n",
        "correct",
        "EM",
        "F1",
        "wrong+cite",
        "wrong-abst",
        "unans-abst",
        "abst-prec",
        "quote-prec",
        "verbatim"
    );
    for (name, s) in rows {
        out.push_str(&format!(
            "{:<12} {:>5} {:>8.3} {:>6.3} {:>6.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>9}\n",
            name,
            s.questions,
            s.correct,
            s.exact_match,
            s.f1,
            s.wrong_with_citation,
            s.wrongly_abstained,
            s.abstained_unanswerable,
            s.abstention_precision,
            s.quote_precision,
            if s.quotes_not_verbatim == 0 { "all".to_string() } else { format!("{} bad", s.quotes_not_verbatim) }
        ));
    }
    out
}

/// One way of answering a set: a mode, with the adapter or without, and the name it is reported
/// under ("quote", "rag-tuned").
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub tuned: bool,
    pub name: String,
}

impl Config {
    /// A config from its report name: a mode, optionally with "-tuned".
    pub fn parse(name: &str) -> Result<Config> {
        let (mode, tuned) = name.strip_suffix("-tuned").map_or((name, false), |m| (m, true));
        Ok(Config { mode: Mode::parse(mode)?, tuned, name: name.to_string() })
    }
}

/// Index `docs` (name, bytes) into `engine`; `progress` gets (done, total) after each.
pub fn index_set(
    engine: &mut Engine,
    docs: &[(String, Vec<u8>)],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    for (i, (name, bytes)) in docs.iter().enumerate() {
        engine.add_document(name, bytes, &mut |_, _| {}).map_err(|e| about(name, e))?;
        progress(i + 1, docs.len());
    }
    Ok(())
}

/// Ask every question of `questions` in each config of `configs` and score them; `record` gets
/// every answer as it is made, `progress` (config name, done, total).
pub fn run(
    engine: &mut Engine,
    questions: &[Question],
    configs: &[Config],
    k: usize,
    record: &mut dyn FnMut(&Record) -> Result<()>,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Vec<(String, Scores)>> {
    let mut rows = Vec::with_capacity(configs.len());
    for c in configs {
        if c.mode.uses_model() {
            engine.use_adapter(c.tuned)?;
        }
        let mut got = Vec::with_capacity(questions.len());
        for (i, q) in questions.iter().enumerate() {
            let r = ask(engine, q, c.mode, k).map_err(|e| about(&format!("question {}", q.id), e))?;
            record(&r)?;
            got.push(r);
            progress(&c.name, i + 1, questions.len());
        }
        rows.push((c.name.clone(), score(&got)));
    }
    Ok(rows)
}

/// `e`, saying which document or question it is about when it is about the input.
fn about(what: &str, e: crate::Error) -> crate::Error {
    match e {
        crate::Error::Input(m) => crate::Error::Input(format!("{what}: {m}")),
        other => other,
    }
}
