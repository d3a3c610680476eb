//! Fitting the sources into the prompt: the model's context holds a question, the sources and
//! room for the answer, so the lowest-ranked source is shortened, then dropped, until they fit.

use super::prompt::{self, PromptSource};
use super::{Engine, Source};
use crate::error::{Error, Result};

impl Engine {
    /// A conversation rendered with the model's chat template, and its token ids.
    pub(super) fn render(&self, messages: &[crate::llm::Message]) -> Result<(String, Vec<u32>)> {
        let generator = self.generator.as_ref().ok_or_else(|| Error::Input("no language model is loaded".into()))?;
        let text = generator.render_chat(messages)?;
        let ids = generator.encode(&text)?;
        Ok((text, ids))
    }

    /// Keep the best-ranked sources that fit the context budget with room for the answer, and
    /// return them with the prompt they make. The last one that does not fit whole is shortened
    /// at a word boundary rather than dropped when a useful part of it fits.
    pub(super) fn fit_sources(&self, question: &str, hits: Vec<Source>) -> Result<(Vec<Source>, String, Vec<u32>)> {
        let budget = self.settings.context_budget.saturating_sub(self.settings.generate.max_tokens);
        self.rag_prompt(question, hits, budget)
    }

    /// The prompt the model gets for `question` answered from `hits` (numbered in this order),
    /// shortened to at most `budget` tokens: the lowest-ranked source is halved, then dropped,
    /// until it fits. Returns the sources as placed, the prompt text and its token ids. The
    /// fine-tuning data is made here too, so it matches what the app sends word for word.
    pub fn rag_prompt(
        &self,
        question: &str,
        mut hits: Vec<Source>,
        budget: usize,
    ) -> Result<(Vec<Source>, String, Vec<u32>)> {
        let render = |hits: &[Source]| {
            let ps: Vec<PromptSource> = hits.iter().map(|s| PromptSource { title: &s.doc, text: &s.text }).collect();
            self.render(&prompt::rag_messages(question, &ps))
        };
        if render(&[])?.1.len() > budget {
            return Err(Error::Input(format!("the question alone is longer than the {budget}-token prompt budget")));
        }
        loop {
            let (text, ids) = render(&hits)?;
            if ids.len() <= budget {
                return Ok((hits, text, ids));
            }
            let last = hits.last_mut().expect("the empty prompt fits, checked above");
            let words: Vec<&str> = last.text.split_inclusive(char::is_whitespace).collect();
            if words.len() > 16 {
                // Halve the last source and try again; a few iterations reach the limit.
                let kept = words[..words.len() / 2].concat().trim_end().to_string();
                last.end = last.start + kept.len();
                last.text = kept + " …";
            } else {
                hits.pop();
            }
        }
    }
}
