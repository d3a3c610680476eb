//! The default mode's answer: the retrieved passages cut into sentences, the sentences ranked
//! (`evidence`), and the best of them quoted word for word with their place in the document, or
//! an abstention that lists the closest passages when the support gate finds no answer.

use super::{decide, evidence, reading, Answer, Citation, CitedBy, Decision, Engine, Mode, Source, Timings, NOT_FOUND};
use crate::error::Result;

/// How many of the best evidence sentences an answer carries for the teaching view.
const EVIDENCE_SHOWN: usize = 8;

impl Engine {
    /// The sentences of `hits`, scored as answers to `question` (whose embedding is
    /// `question_vector`), best first. Each sentence's `source` indexes `hits`.
    pub fn evidence(
        &mut self,
        question: &str,
        question_vector: &[f32],
        hits: &[Source],
    ) -> Result<Vec<evidence::Scored>> {
        let sentences = evidence::sentences(&self.passages(hits));
        if sentences.is_empty() {
            return Ok(vec![]);
        }
        let texts: Vec<&str> = sentences.iter().map(|s| s.text.as_str()).collect();
        let vectors = self.embedder.embed(&texts)?;
        let similarity: Vec<f32> = vectors.iter().map(|v| crate::index::vector::dot(v, question_vector)).collect();
        let passage_scores: Vec<f32> = hits.iter().map(|h| h.score).collect();
        let mut ranked =
            evidence::rank(question, sentences, &similarity, &passage_scores, &self.library.index().keywords);
        if self.reads() {
            if let (Some(generator), Some(top)) = (self.generator.as_mut(), ranked.first_mut()) {
                top.features.reading = Some(reading::question_pmi(generator, &top.sentence.text, question)?);
            }
        }
        Ok(ranked)
    }

    /// Each hit as `(its index, its document, start, end)`, what `evidence::sentences` splits.
    pub(super) fn passages(&self, hits: &[Source]) -> Vec<(usize, &crate::library::StoredDocument, usize, usize)> {
        hits.iter().enumerate().filter_map(|(i, h)| Some((i, self.document(&h.doc)?, h.start, h.end))).collect()
    }

    pub(super) fn document(&self, name: &str) -> Option<&crate::library::StoredDocument> {
        self.library.documents().iter().find(|d| d.name == name)
    }

    /// An answer saying that the documents do not contain the answer, listing the closest
    /// passages.
    pub(super) fn not_found(
        &self,
        mode: Mode,
        sources: Vec<Source>,
        support: Option<f32>,
        ranked: Vec<evidence::Scored>,
        timings: Timings,
    ) -> Answer {
        Answer {
            answer: NOT_FOUND.to_string(),
            citations: vec![],
            sources,
            abstained: true,
            mode,
            support,
            evidence: ranked.into_iter().take(EVIDENCE_SHOWN).collect(),
            sentences: vec![],
            prompt: String::new(),
            prompt_tokens: 0,
            generated_tokens: 0,
            stop: None,
            timings_ms: timings,
            index: self.index_kind(),
            tuned: self.tuned,
            decision: None,
        }
    }

    /// The default mode's answer: the best evidence sentences, quoted and cited, when the gate
    /// finds that they answer the question; NOT_FOUND otherwise.
    /// A yes/no question's answer opens with the decision the best sentence supports.
    pub(super) fn quote(
        &self,
        question: &str,
        sources: Vec<Source>,
        ranked: Vec<evidence::Scored>,
        timings: Timings,
    ) -> Answer {
        let support = evidence::support(&ranked, self.scorer());
        if ranked.is_empty() || support < self.scorer().threshold {
            return self.not_found(Mode::Quote, sources, Some(support), ranked, timings);
        }
        let chosen = self.complete(evidence::select(&ranked, evidence::QUOTE_RELATIVE));
        let citations: Vec<Citation> = self
            .join_adjacent(chosen)
            .iter()
            .map(|s| Citation::new(s.source + 1, CitedBy::Quote, &sources[s.source], s))
            .collect();
        let quotes = citations.iter().map(|c| format!("{} [{}]", c.quote, c.n)).collect::<Vec<_>>().join(" ");
        let decision = decide::yes_no(question, &ranked[0].sentence.text).map(Decision::from);
        let answer = match decision {
            Some(d) => format!("{}: {quotes}", d.word()),
            None => quotes,
        };
        // The same shape as an abstention, with the quotes in place of NOT_FOUND.
        Answer {
            answer,
            citations,
            abstained: false,
            decision,
            ..self.not_found(Mode::Quote, sources, Some(support), ranked, timings)
        }
    }

    /// The chosen sentences, each once (the same sentence can stand in two documents), and each
    /// carried on into the sentences after it while it ends without a full stop: "you can run"
    /// before a code block, "the options are:" before a list.
    pub(super) fn complete(&self, chosen: Vec<&evidence::Scored>) -> Vec<evidence::Sentence> {
        let key = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut out: Vec<evidence::Sentence> = Vec::new();
        let mut said: Vec<String> = Vec::new();
        for s in chosen {
            let text = key(&s.sentence.text);
            if said.contains(&text) {
                continue;
            }
            said.push(text);
            let mut sentence = s.sentence.clone();
            if let Some(doc) = self.document(&sentence.doc) {
                // A defined term's heading opens the quote: "--shuffle", then what it does.
                if let Some(lead) = sentence.lead {
                    sentence.start = lead;
                }
                sentence.end = evidence::carry(doc, sentence.end);
                sentence.text = doc.text[sentence.start..sentence.end].to_string();
            }
            // Carried on, it can now be a quote already made from another document.
            if out.iter().any(|o| key(&o.text) == key(&sentence.text)) {
                continue;
            }
            out.push(sentence);
        }
        out
    }

    /// Quotes that follow each other in a document become one quote, read in the document's
    /// order; otherwise the best comes first.
    pub(super) fn join_adjacent(&self, best_first: Vec<evidence::Sentence>) -> Vec<evidence::Sentence> {
        let mut out: Vec<evidence::Sentence> = Vec::new();
        for s in best_first {
            let doc = self.document(&s.doc);
            // b follows a, or overlaps it (a sentence carried on into the next may meet another).
            let joins = |a: &evidence::Sentence, b: &evidence::Sentence| {
                a.doc == b.doc
                    && a.start <= b.start
                    && (b.start <= a.end
                        || doc.is_some_and(|d| d.text.get(a.end..b.start).is_some_and(|gap| gap.trim().is_empty())))
            };
            let text = |start: usize, end: usize| doc.map(|d| d.text[start..end].to_string());
            if let Some(q) = out.iter_mut().find(|q| joins(q, &s) || joins(&s, q)) {
                let (start, end) = (q.start.min(s.start), q.end.max(s.end));
                if let Some(t) = text(start, end) {
                    (q.start, q.end, q.text) = (start, end, t);
                    q.source = q.source.min(s.source);
                    continue;
                }
            }
            out.push(s);
        }
        out
    }
}
