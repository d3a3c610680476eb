//! PubMedQA as training and evaluation data, and the fine-tuning examples made from it.
//!
//! PubMedQA (Jin et al. 2019; MIT licence) pairs a question taken from a paper's title with the
//! paper's abstract minus its conclusion (`CONTEXTS`), the conclusion (`LONG_ANSWER`) and an
//! expert's yes / no / maybe (`final_decision`). Each entry becomes one document, named
//! `pubmedqa/<id>`, so a question's own abstract is its gold source.
//!
//! A training example is the app's exact prompt (same system text, same numbered sources, same
//! shortening) with the sources retrieved by the app's own search, RAFT-style: usually the
//! passage that answers is among them and the target answer cites it; for a share of examples
//! the sources are passages from other papers and the target is the NOT_FOUND sentence.
//!
//! Three kinds of question are made from each abstract, so that the model does not learn that
//! every question is a yes/no one (an adapter trained on yes/no questions alone answered "What
//! year…?" questions with NOT_FOUND):
//! - the paper's question with [`DECISION_HINT`]: "Yes. <the paper's conclusion> [n]." (what
//!   `pocketrag eval` scores);
//! - the paper's question alone: "<the paper's conclusion> [n].";
//! - a question about one labelled section of the abstract (results, methods, aim, setting,
//!   participants, outcome measures), in our own wording around the paper's question: the
//!   section's first sentence or two, cited.

use crate::error::{Error, Result};
use crate::rag::{Engine, Source, NOT_FOUND};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Yes,
    No,
    Maybe,
}

impl Decision {
    pub fn word(self) -> &'static str {
        match self {
            Decision::Yes => "Yes",
            Decision::No => "No",
            Decision::Maybe => "Maybe",
        }
    }
}

#[derive(Debug, Clone)]
pub struct QaEntry {
    pub id: String,
    pub question: String,
    pub contexts: Vec<String>,
    /// The section label of each context (RESULTS, METHODS, ...), where the file gives them.
    pub labels: Vec<String>,
    pub decision: Decision,
    pub long_answer: String,
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "QUESTION")]
    question: String,
    #[serde(rename = "CONTEXTS")]
    contexts: Vec<String>,
    #[serde(rename = "LABELS", default)]
    labels: Vec<String>,
    final_decision: Decision,
    #[serde(rename = "LONG_ANSWER")]
    long_answer: String,
}

/// Entries of a file in PubMedQA's format (a JSON object keyed by PubMed id), sorted by id.
pub fn read_pubmedqa(bytes: &[u8], file: &str) -> Result<Vec<QaEntry>> {
    let raw: BTreeMap<String, RawEntry> =
        serde_json::from_slice(bytes).map_err(|e| Error::document(file, format!("not in PubMedQA's format ({e})")))?;
    if raw.is_empty() {
        return Err(Error::document(file, "holds no questions"));
    }
    Ok(raw
        .into_iter()
        .map(|(id, r)| QaEntry {
            id,
            question: r.question,
            contexts: r.contexts,
            labels: r.labels,
            decision: r.final_decision,
            long_answer: r.long_answer,
        })
        .collect())
}

/// The fold (0..k) of each entry: entries ordered by a hash of their id, dealt out in turn. The
/// same file always splits the same way, whatever order it lists the entries in, and the folds
/// differ in size by at most one.
pub fn folds(entries: &[QaEntry], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| (crc32fast::hash(entries[i].id.as_bytes()), entries[i].id.clone()));
    let mut fold = vec![0; entries.len()];
    for (rank, i) in order.into_iter().enumerate() {
        fold[i] = rank % k;
    }
    fold
}

pub fn document_name(id: &str) -> String {
    format!("pubmedqa/{id}")
}

pub fn document_text(entry: &QaEntry) -> String {
    entry.contexts.join("\n\n")
}

/// Add each entry's abstract to the engine's library as one document; `progress` gets
/// (done, total) after each.
pub fn index_entries(engine: &mut Engine, entries: &[&QaEntry], progress: &mut dyn FnMut(usize, usize)) -> Result<()> {
    for (i, e) in entries.iter().enumerate() {
        engine.add_document(&document_name(&e.id), document_text(e).as_bytes(), &mut |_, _| {})?;
        progress(i + 1, entries.len());
    }
    Ok(())
}

/// Appended to every PubMedQA question, in training and in evaluation, so that the base model
/// too knows an answer is expected to start with a decision.
pub const DECISION_HINT: &str = "Answer yes, no or maybe.";

pub fn asked(entry: &QaEntry) -> String {
    format!("{} {DECISION_HINT}", entry.question.trim())
}

/// The decision an answer gives: the first "yes", "no" or "maybe" in it, as a whole word.
pub fn parse_decision(answer: &str) -> Option<Decision> {
    answer.split(|c: char| !c.is_alphanumeric()).find_map(|w| match w.to_ascii_lowercase().as_str() {
        "yes" => Some(Decision::Yes),
        "no" => Some(Decision::No),
        "maybe" => Some(Decision::Maybe),
        _ => None,
    })
}

/// The answer we train towards for the paper's own question: the decision (when asked for one),
/// the first two sentences of the paper's conclusion (some run to five; we teach brevity), then
/// the numbers of the sources from the question's abstract.
pub fn target_answer(entry: &QaEntry, with_decision: bool, cite: &[usize]) -> String {
    use unicode_segmentation::UnicodeSegmentation;
    if cite.is_empty() {
        return NOT_FOUND.to_string();
    }
    let brief: String = entry.long_answer.trim().split_sentence_bounds().take(2).collect();
    let conclusion = brief.trim().trim_end_matches('.');
    if with_decision {
        format!("{}. {conclusion} {}.", entry.decision.word(), marks(cite))
    } else {
        format!("{conclusion} {}.", marks(cite))
    }
}

fn marks(cite: &[usize]) -> String {
    cite.iter().map(|n| format!("[{n}]")).collect()
}

/// Our question about a section with label `label`, in one of three wordings (`variant`), or
/// None for labels we do not ask about. Several wordings, so the model learns to answer the
/// question rather than to recognise one template.
pub fn section_question(label: &str, paper_question: &str, variant: usize) -> Option<String> {
    let l = label.to_ascii_uppercase();
    let q = paper_question.trim();
    let asks: [&str; 3] = if l.contains("RESULT") || l.contains("FINDING") {
        [
            "what did the researchers find",
            "What were the results of the study on \"{q}\"?",
            "What did the study asking \"{q}\" show?",
        ]
    } else if l.contains("METHOD") || l.contains("DESIGN") || l.contains("MATERIAL") {
        [
            "how was the research done",
            "How was the study on \"{q}\" carried out?",
            "Which methods did the study asking \"{q}\" use?",
        ]
    } else if ["BACKGROUND", "OBJECTIVE", "PURPOSE", "AIM", "INTRODUCTION"].iter().any(|k| l.contains(k)) {
        [
            "what was the aim of the research",
            "Why was the study on \"{q}\" done?",
            "What was the background of the study asking \"{q}\"?",
        ]
    } else if l.contains("SETTING") {
        [
            "where was the research done",
            "Where did the study on \"{q}\" take place?",
            "What was the setting of the study asking \"{q}\"?",
        ]
    } else if ["PATIENT", "PARTICIPANT", "SUBJECT"].iter().any(|k| l.contains(k)) {
        [
            "who took part",
            "Who were the participants of the study on \"{q}\"?",
            "Which patients did the study asking \"{q}\" include?",
        ]
    } else if l.contains("OUTCOME") || l.contains("MEASURE") {
        [
            "what was measured",
            "What did the study on \"{q}\" measure?",
            "Which outcomes did the study asking \"{q}\" measure?",
        ]
    } else {
        return None;
    };
    Some(match variant % 3 {
        0 => format!("In the study asking \"{q}\", {}?", asks[0]),
        v => asks[v].replace("{q}", q),
    })
}

/// The start of a section as an answer: its first sentence, or two when the first is short.
/// Returns the text and its byte offset inside `section`.
fn opening(section: &str) -> (String, usize) {
    use unicode_segmentation::UnicodeSegmentation;
    let sentences: Vec<(usize, &str)> = section.split_sentence_bound_indices().collect();
    let Some(&(start, first)) = sentences.first() else { return (String::new(), 0) };
    let mut text = first.to_string();
    if first.split_whitespace().count() < 10 {
        if let Some((_, second)) = sentences.get(1) {
            text.push_str(second);
        }
    }
    (text.trim().to_string(), start)
}

/// Which kind of question an example asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Decision,
    Conclusion,
    Section,
}

/// One training sequence: prompt then answer; the loss is taken on the answer only.
#[derive(Debug, Clone)]
pub struct Example {
    pub id: String,
    pub ids: Vec<u32>,
    pub prompt_len: usize,
    /// False for a NOT_FOUND example.
    pub answerable: bool,
}

/// Counts for the model card.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExampleStats {
    pub examples: usize,
    pub decision: usize,
    pub conclusion: usize,
    pub section: usize,
    pub not_found: usize,
    /// Questions whose answering passage was not among the 50 best chunks (left out).
    pub gold_not_retrieved: usize,
    pub mean_tokens: f64,
    pub max_tokens: usize,
}

/// Sources for a NOT_FOUND example: the best passage for each of a few other, randomly drawn
/// questions, so they are about other papers. The question's own near neighbours were used
/// before (hard negatives); the adapter then learnt to refuse whenever it was unsure and
/// refused answerable questions about text unlike PubMedQA (a lighthouse, sourdough). Refusing
/// when the sources are about something else is the behaviour a user expects, and the one a
/// 135M model can learn.
fn unrelated_sources(
    engine: &Engine,
    entries: &[&QaEntry],
    gold: &str,
    sources: usize,
    rng: &mut rand::rngs::SmallRng,
) -> Result<Vec<Source>> {
    let mut out: Vec<Source> = Vec::new();
    for _ in 0..sources * 4 {
        if out.len() == sources {
            break;
        }
        let other = entries[rng.random_range(0..entries.len())];
        let name = document_name(&other.id);
        if name == gold || out.iter().any(|s| s.doc == name) {
            continue;
        }
        if let Some(hit) = engine.search(&other.question, 1)?.hits.into_iter().next() {
            if hit.doc != gold {
                out.push(hit);
            }
        }
    }
    Ok(out)
}

/// How many chunks are searched when looking for the answering chunk and for distractors.
const SEARCH_WIDTH: usize = 50;

/// Shares of the three kinds of question (the rest are section questions).
const DECISION_SHARE: f64 = 0.45;
const CONCLUSION_SHARE: f64 = 0.10;

/// Examples for `entries`, retrieved from the documents already in `engine` (which must hold a
/// generator for the chat template and tokenizer). `seed` decides the kinds of question and which
/// examples become NOT_FOUND ones.
pub fn build_examples(
    engine: &Engine,
    entries: &[&QaEntry],
    sources: usize,
    no_answer_fraction: f64,
    max_seq_len: usize,
    seed: u64,
) -> Result<(Vec<Example>, ExampleStats)> {
    let generator = engine.generator().ok_or_else(|| Error::Input("no language model is loaded".into()))?;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut stats = ExampleStats::default();
    for entry in entries {
        let gold = document_name(&entry.id);
        let answerable = rng.random::<f64>() >= no_answer_fraction;
        let roll = rng.random::<f64>();
        let variant = rng.random_range(0..3);
        let askable: Vec<(usize, String)> = entry
            .labels
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < entry.contexts.len())
            .filter_map(|(i, l)| section_question(l, &entry.question, variant).map(|q| (i, q)))
            .collect();
        let kind = if roll < DECISION_SHARE {
            Kind::Decision
        } else if roll < DECISION_SHARE + CONCLUSION_SHARE || askable.is_empty() {
            Kind::Conclusion
        } else {
            Kind::Section
        };
        // The question, and for a section question the byte span of its answer in the document.
        let (question, answer_at) = match kind {
            Kind::Decision => (asked(entry), None),
            Kind::Conclusion => (entry.question.trim().to_string(), None),
            Kind::Section => {
                let (i, q) = askable[rng.random_range(0..askable.len())].clone();
                let (text, offset) = opening(&entry.contexts[i]);
                // Contexts are joined with "\n\n" in document_text.
                let at: usize = entry.contexts[..i].iter().map(|c| c.len() + 2).sum::<usize>() + offset;
                (q, Some((text, at)))
            }
        };
        let answers =
            |h: &Source| h.doc == gold && answer_at.as_ref().is_none_or(|(_, at)| h.start <= *at && *at < h.end);
        let mut chosen: Vec<Source> = if answerable {
            let hits = engine.search(&question, SEARCH_WIDTH)?.hits;
            let mut top: Vec<Source> = hits.iter().take(sources).cloned().collect();
            if !top.iter().any(answers) {
                let Some(g) = hits.iter().find(|h| answers(h)) else {
                    stats.gold_not_retrieved += 1;
                    continue;
                };
                // The retriever ranked it lower; put it in the last place, as a weaker hit.
                top.truncate(sources.saturating_sub(1));
                top.push(g.clone());
            }
            top
        } else {
            unrelated_sources(engine, entries, &gold, sources, &mut rng)?
        };
        chosen.truncate(sources);
        let longest = match &answer_at {
            Some((text, _)) => format!("{text} [1][2][3]."),
            None => target_answer(entry, true, &[1, 2, 3]),
        };
        // Budget: the answer (at most this long) must fit after the prompt.
        let answer_room = generator.encode(&longest)?.len() + 2;
        let (placed, _, prompt_ids) = engine.rag_prompt(&question, chosen, max_seq_len.saturating_sub(answer_room))?;
        let cite: Vec<usize> = placed.iter().enumerate().filter(|(_, s)| answers(s)).map(|(i, _)| i + 1).collect();
        if answerable && cite.is_empty() {
            // Shortening pushed the answering source out: too long to train on.
            continue;
        }
        let target = match (&answer_at, cite.is_empty()) {
            (_, true) => NOT_FOUND.to_string(),
            (Some((text, _)), false) => format!("{} {}.", text.trim_end_matches('.'), marks(&cite)),
            (None, false) => target_answer(entry, kind == Kind::Decision, &cite),
        };
        let answer_ids = generator.encode(&format!("{target}<|im_end|>"))?;
        let mut ids = prompt_ids;
        let prompt_len = ids.len();
        ids.extend(answer_ids);
        if ids.len() > max_seq_len {
            continue;
        }
        stats.examples += 1;
        match kind {
            Kind::Decision => stats.decision += 1,
            Kind::Conclusion => stats.conclusion += 1,
            Kind::Section => stats.section += 1,
        }
        stats.not_found += usize::from(!answerable);
        stats.max_tokens = stats.max_tokens.max(ids.len());
        stats.mean_tokens += ids.len() as f64;
        out.push(Example { id: entry.id.clone(), ids, prompt_len, answerable });
    }
    if stats.examples > 0 {
        stats.mean_tokens /= stats.examples as f64;
    }
    Ok((out, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> QaEntry {
        QaEntry {
            id: id.into(),
            question: "Does it work?".into(),
            contexts: vec!["a".into()],
            labels: vec!["RESULTS".into()],
            decision: Decision::Maybe,
            long_answer: "It might.".into(),
        }
    }

    #[test]
    fn folds_are_balanced_and_independent_of_order() {
        let mut entries: Vec<QaEntry> = (0..103).map(|i| entry(&format!("{}", 1000 + i * 7))).collect();
        let a = folds(&entries, 5);
        let counts: Vec<usize> = (0..5).map(|f| a.iter().filter(|&&x| x == f).count()).collect();
        assert!(counts.iter().all(|&c| c == 20 || c == 21), "{counts:?}");
        let by_id: BTreeMap<String, usize> = entries.iter().map(|e| e.id.clone()).zip(a).collect();
        entries.reverse();
        let b = folds(&entries, 5);
        for (e, f) in entries.iter().zip(b) {
            assert_eq!(by_id[&e.id], f);
        }
    }

    #[test]
    fn decisions_are_read_from_the_first_decision_word() {
        assert_eq!(parse_decision("Yes. It works [1]."), Some(Decision::Yes));
        assert_eq!(parse_decision("The answer is no, because"), Some(Decision::No));
        assert_eq!(parse_decision("Maybe: the data are mixed"), Some(Decision::Maybe));
        assert_eq!(parse_decision("Nothing here knows. Notably"), None);
        assert_eq!(parse_decision(NOT_FOUND), None);
    }

    #[test]
    fn targets_cite_the_gold_sources() {
        let e = entry("1");
        assert_eq!(target_answer(&e, true, &[2]), "Maybe. It might [2].");
        assert_eq!(target_answer(&e, true, &[1, 3]), "Maybe. It might [1][3].");
        assert_eq!(target_answer(&e, false, &[1]), "It might [1].");
        assert_eq!(target_answer(&e, true, &[]), NOT_FOUND);
    }

    #[test]
    fn section_questions_and_answers() {
        let q = section_question("MATERIALS AND METHODS", "Does it work?", 0).unwrap();
        assert_eq!(q, "In the study asking \"Does it work?\", how was the research done?");
        let q = section_question("RESULTS", "Does it work?", 1).unwrap();
        assert_eq!(q, "What were the results of the study on \"Does it work?\"?");
        assert!(section_question("METHODS AND RESULTS", "x", 2).unwrap().contains("show"));
        assert!(section_question("CONCLUSIONS", "x", 0).is_none());
        assert_eq!(
            opening("Short one. Then a second sentence here. And a third."),
            ("Short one. Then a second sentence here.".to_string(), 0)
        );
        assert_eq!(
            opening("This first sentence is long enough to stand alone as an answer. Second.").0,
            "This first sentence is long enough to stand alone as an answer."
        );
    }
}
