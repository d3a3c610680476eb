//! Answers the model writes, and what the engine checks in them: copy mode's runs copied from
//! the sources (each cited where it was copied from) and free mode's sentences, each marked as
//! supported by a source or not found in the user's documents.

use super::{cite, constrain, evidence, support, Citation, CitedBy, Engine, Source, NOT_FOUND};
use crate::error::{Error, Result};

/// Shorter sentences ("Yes.", "A: 1871.") carry too little meaning to check on their own.
const CHECK_SENTENCE_MIN_WORDS: usize = 4;

impl Engine {
    /// The constraint for copy mode over `sources` (numbered from 1 as in the prompt).
    pub fn quote_constraint(&self, sources: &[Source]) -> Result<constrain::QuoteConstraint> {
        let generator = self.generator.as_ref().ok_or_else(|| Error::Input("no language model is loaded".into()))?;
        let mut texts = Vec::with_capacity(sources.len());
        for s in sources {
            texts.push(generator.encode(&s.text)?);
        }
        let cites = (1..=sources.len()).map(|n| generator.encode(&format!(" [{n}]"))).collect::<Result<Vec<_>>>()?;
        let mut joiners = Vec::new();
        for j in constrain::JOINERS {
            if let [t] = generator.encode(j)?[..] {
                joiners.push(t);
            }
        }
        Ok(constrain::QuoteConstraint::new(texts, cites, joiners, generator.stop_ids().to_vec(), constrain::MIN_RUN))
    }

    /// Copy mode's citations: each copied run, found again by replaying the answer's tokens
    /// through the constraint, as the byte range of its source it came from.
    pub(super) fn copied(&self, tokens: &[u32], sources: &[Source]) -> Result<Vec<Citation>> {
        use crate::llm::Constraint;
        let generator = self.generator.as_ref().ok_or_else(|| Error::Input("no language model is loaded".into()))?;
        let mut c = self.quote_constraint(sources)?;
        for &t in tokens {
            c.advance(t);
        }
        let offsets =
            sources.iter().map(|s| Ok(generator.encode_with_offsets(&s.text)?.1)).collect::<Result<Vec<_>>>()?;
        let mut out: Vec<Citation> = Vec::new();
        for span in c.spans() {
            let source = &sources[span.source];
            let offsets = &offsets[span.source];
            let (Some(first), Some(last)) = (offsets.get(span.from), offsets.get(span.to.saturating_sub(1))) else {
                continue;
            };
            let piece = &source.text[first.0..last.1];
            let lead = piece.len() - piece.trim_start().len();
            let (from, to) = (first.0 + lead, first.0 + piece.trim_end().len());
            let quote = evidence::Sentence {
                source: span.source,
                doc: source.doc.clone(),
                start: source.start + from,
                end: source.start + to,
                text: source.text[from..to].to_string(),
                heading: None,
                lead: None,
            };
            // A source shortened for the prompt ends in " …", which is not the document's.
            if self.document(&source.doc).and_then(|d| d.text.get(quote.start..quote.end)) != Some(quote.text.as_str())
            {
                continue;
            }
            out.push(Citation::new(span.source + 1, CitedBy::Model, source, &quote));
        }
        Ok(out)
    }

    /// Free mode's check: each written sentence against the sentences of `sources`. A sentence
    /// is supported by the source sentence most similar to it when that one is similar enough
    /// and holds most of its content words (see [`support`]); supported sentences are cited
    /// with that quote, `Model` when the model's own `[n]` on the sentence names its source.
    pub fn check(&self, answer: &str, sources: &[Source]) -> Result<(Vec<support::SentenceSupport>, Vec<Citation>)> {
        let claims = support::claims(answer);
        if sources.is_empty() || claims.is_empty() || answer.contains(NOT_FOUND) {
            return Ok((vec![], vec![]));
        }
        let quotes = evidence::sentences(&self.passages(sources));
        let plain: Vec<String> = claims.iter().map(|&(s, e)| support::without_marks(&answer[s..e])).collect();
        let checked: Vec<usize> =
            (0..claims.len()).filter(|&i| plain[i].split_whitespace().count() >= CHECK_SENTENCE_MIN_WORDS).collect();
        let mut texts: Vec<&str> = checked.iter().map(|&i| plain[i].as_str()).collect();
        texts.extend(quotes.iter().map(|q| q.text.as_str()));
        let vectors = if quotes.is_empty() || checked.is_empty() { vec![] } else { self.embedder.embed(&texts)? };
        let (claim_vecs, quote_vecs) = vectors.split_at(checked.len().min(vectors.len()));
        let mut citations: Vec<Citation> = Vec::new();
        let mut out = Vec::new();
        for (i, &(s, e)) in claims.iter().enumerate() {
            let mut mark = support::SentenceSupport {
                text: answer[s..e].to_string(),
                start: s,
                end: e,
                cited: None,
                similarity: 0.0,
                covered: 0.0,
            };
            if let Some(c) = checked.iter().position(|&j| j == i).and_then(|c| claim_vecs.get(c)) {
                // Names and words may come from the sentences around a quote ("It was lit in
                // 1871" follows the sentence naming the lighthouse).
                let around = |q: usize| {
                    let quote = &quotes[q];
                    [q.wrapping_sub(1), q, q + 1]
                        .iter()
                        .filter_map(|&j| quotes.get(j))
                        .filter(|o| o.doc == quote.doc)
                        .map(|o| o.text.as_str())
                        .chain(quote.heading.as_deref())
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                // The quote is the passing sentence that holds most of the claim itself, so the
                // highlight lands on "in 1871" rather than on the sentence before it.
                let best = quote_vecs
                    .iter()
                    .enumerate()
                    .map(|(q, v)| (q, crate::index::vector::dot(c, v)))
                    .filter(|&(_, sim)| sim >= support::MIN_SIMILARITY)
                    .map(|(q, sim)| (q, sim, support::covered(&plain[i], &around(q))))
                    .max_by(|a, b| {
                        let key = |&(q, sim, cov): &(usize, f32, f32)| {
                            (cov >= support::MIN_COVERED, support::shared(&plain[i], &quotes[q].text) + sim)
                        };
                        let (ka, kb) = (key(a), key(b));
                        ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
                    });
                let closest = quote_vecs.iter().map(|v| crate::index::vector::dot(c, v)).fold(0.0, f32::max);
                mark.similarity = closest;
                if let Some((q, sim, cov)) = best {
                    mark.covered = cov;
                    if cov >= support::MIN_COVERED {
                        let quote = &quotes[q];
                        mark.similarity = sim;
                        let n = quote.source + 1;
                        let by = if cite::cited(&mark.text, sources.len()).contains(&n) {
                            CitedBy::Model
                        } else {
                            CitedBy::Match
                        };
                        if !citations.iter().any(|c| c.doc == quote.doc && c.start == quote.start) {
                            citations.push(Citation::new(n, by, &sources[quote.source], quote));
                        }
                        mark.cited = Some(n);
                    }
                }
            }
            out.push(mark);
        }
        Ok((out, citations))
    }
}
