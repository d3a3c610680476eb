//! The prompt format — defined here and nowhere else, because the fine-tuning data must be
//! rendered exactly as the app renders its prompts.

use crate::llm::Message;

/// What the model should say, word for word, when the sources do not answer the question. The
/// pipeline also says it itself when retrieval finds nothing relevant.
pub const NOT_FOUND: &str = "The documents do not contain the answer.";

const RAG_SYSTEM: &str = "You answer questions using only the numbered sources the user gives you. \
After each fact, cite the source it came from with its number in square brackets, like [1]. \
Answer in one to three sentences. If the sources do not contain the answer, reply exactly: \
The documents do not contain the answer.";

const PLAIN_SYSTEM: &str = "You are a helpful assistant. Answer in one to three sentences.";

/// One numbered source as the model sees it.
#[derive(Debug, Clone)]
pub struct PromptSource<'a> {
    pub title: &'a str,
    pub text: &'a str,
}

/// Chat markup inside untrusted text (a document, a question) would otherwise be tokenized as
/// real control tokens and let a document end the user's turn and speak as the assistant.
pub fn defuse(text: &str) -> String {
    text.replace("<|", "<\u{2060}|").replace("|>", "|\u{2060}>")
}

/// Messages for a question answered from `sources` (numbered from 1 in the given order).
pub fn rag_messages(question: &str, sources: &[PromptSource]) -> Vec<Message> {
    let mut user = String::from("Sources:\n");
    for (i, s) in sources.iter().enumerate() {
        user.push_str(&format!("[{}] {}\n{}\n\n", i + 1, defuse(s.title), defuse(s.text.trim())));
    }
    user.push_str(&format!("Question: {}", defuse(question.trim())));
    vec![Message::new("system", RAG_SYSTEM), Message::new("user", user)]
}

/// Messages for a question with no retrieval: the model answers from what it learned.
pub fn plain_messages(question: &str) -> Vec<Message> {
    vec![Message::new("system", PLAIN_SYSTEM), Message::new("user", defuse(question.trim()))]
}
