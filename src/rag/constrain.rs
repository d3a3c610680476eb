//! Quote-constrained decoding: the model may only copy runs of its sources' tokens, each run
//! followed by the citation of the source it came from, with a few joining tokens between runs
//! ("Yes,", "No,", "and", a full stop). So no content word can be invented, and each copied run
//! maps back to a byte range of its source.
//!
//! The state is the set of source positions the output so far could be copying from: every
//! position where the last copied tokens stand in a source. That set shrinks as the run grows,
//! and an index from token to its positions starts it, so a step costs the size of the set, not
//! of the sources.

use crate::llm::Constraint;
use std::collections::{BTreeSet, HashMap, VecDeque};

/// What may stand between copied runs: a decision, a list joiner, an end of sentence. Each is
/// used where the tokenizer has it as one token.
pub const JOINERS: [&str; 10] = ["Yes", "No", " Yes", " No", ",", " and", " or", ".", " ", "\n"];

/// A run copies at least this many tokens: shorter, and a "quote" could be one common word.
pub const MIN_RUN: usize = 3;

/// A copied run: tokens `from..to` of source `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub source: usize,
    pub from: usize,
    pub to: usize,
}

enum State {
    /// Between runs: a run may start at any source token, or a joining token may come.
    Between,
    /// Copying: each entry is (source, where the run started, the next position to copy).
    Copying(Vec<(usize, usize, usize)>),
    /// The citation of the run just ended, token by token.
    Citing(VecDeque<u32>),
}

pub struct QuoteConstraint {
    sources: Vec<Vec<u32>>,
    /// Every token of the sources, and where it stands.
    starts: HashMap<u32, Vec<(usize, usize)>>,
    /// Tokens allowed between runs (no content of their own).
    joiners: Vec<u32>,
    stops: Vec<u32>,
    /// The tokens of " [n]" for source n (from 1); the first token opens a citation.
    cites: Vec<Vec<u32>>,
    /// A run must copy at least this many tokens before its citation.
    min_run: usize,
    state: State,
    allowed: Vec<u32>,
    spans: Vec<Span>,
}

impl QuoteConstraint {
    /// `sources[i]` are the token ids of source i+1's text; `cites[i]` those of " [i+1]";
    /// `joiners` the tokens allowed between runs; `stops` the end-of-text tokens.
    pub fn new(
        sources: Vec<Vec<u32>>,
        cites: Vec<Vec<u32>>,
        joiners: Vec<u32>,
        stops: Vec<u32>,
        min_run: usize,
    ) -> Self {
        let mut starts: HashMap<u32, Vec<(usize, usize)>> = HashMap::new();
        for (s, ids) in sources.iter().enumerate() {
            for (i, &t) in ids.iter().enumerate() {
                starts.entry(t).or_default().push((s, i));
            }
        }
        QuoteConstraint {
            sources,
            starts,
            joiners,
            stops,
            cites,
            min_run: min_run.max(1),
            state: State::Between,
            allowed: Vec::new(),
            spans: Vec::new(),
        }
    }

    /// The runs copied so far, in order.
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// Position i of source s is not inside a run already copied: quoting the same words twice
    /// is how a small model loops ("rustc [1] rustc [1] ...").
    fn fresh(&self, s: usize, i: usize) -> bool {
        !self.spans.iter().any(|sp| sp.source == s && sp.from <= i && i < sp.to)
    }

    fn opens_citation(&self, token: u32) -> bool {
        self.cites.iter().any(|c| c.first() == Some(&token))
    }
}

impl Constraint for QuoteConstraint {
    fn allowed(&mut self) -> Option<&[u32]> {
        let mut set = BTreeSet::new();
        match &self.state {
            State::Between => {
                set.extend(
                    self.starts.iter().filter(|(_, at)| at.iter().any(|&(s, i)| self.fresh(s, i))).map(|(&t, _)| t),
                );
                set.extend(self.joiners.iter().copied());
                if !self.spans.is_empty() {
                    set.extend(self.stops.iter().copied());
                }
            }
            State::Copying(at) => {
                for &(s, from, next) in at {
                    if let Some(&t) = self.sources[s].get(next) {
                        set.insert(t);
                    }
                    if next - from >= self.min_run {
                        if let Some(&open) = self.cites[s].first() {
                            set.insert(open);
                        }
                    }
                }
            }
            State::Citing(queue) => set.extend(queue.front().copied()),
        }
        self.allowed.clear();
        self.allowed.extend(set);
        Some(&self.allowed)
    }

    fn advance(&mut self, token: u32) {
        self.state = match std::mem::replace(&mut self.state, State::Between) {
            State::Between => match self.starts.get(&token) {
                Some(places) => State::Copying(
                    places.iter().filter(|&&(s, i)| self.fresh(s, i)).map(|&(s, i)| (s, i, i + 1)).collect(),
                ),
                None => State::Between,
            },
            State::Copying(at) => {
                let ending = at
                    .iter()
                    .find(|&&(s, from, next)| next - from >= self.min_run && self.cites[s].first() == Some(&token));
                match ending {
                    // The citation opened: record the run (the first candidate: all candidates
                    // copy the same tokens) and say the rest of its number.
                    Some(&(s, from, next)) if self.opens_citation(token) => {
                        self.spans.push(Span { source: s, from, to: next });
                        State::Citing(self.cites[s][1..].iter().copied().collect())
                    }
                    _ => {
                        let still: Vec<_> = at
                            .into_iter()
                            .filter(|&(s, _, next)| self.sources[s].get(next) == Some(&token))
                            .map(|(s, from, next)| (s, from, next + 1))
                            .collect();
                        if still.is_empty() {
                            State::Between
                        } else {
                            State::Copying(still)
                        }
                    }
                }
            }
            State::Citing(mut queue) => {
                queue.pop_front();
                if queue.is_empty() {
                    State::Between
                } else {
                    State::Citing(queue)
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Token ids: sources are short made-up sequences; 90 opens a citation, 91/92 are the digits,
    // 93 closes it, 50 joins, 0 stops.
    fn constraint() -> QuoteConstraint {
        QuoteConstraint::new(
            vec![vec![1, 2, 3, 4, 5], vec![7, 2, 3, 8]],
            vec![vec![90, 91, 93], vec![90, 92, 93]],
            vec![50],
            vec![0],
            2,
        )
    }

    fn allowed(c: &mut QuoteConstraint) -> Vec<u32> {
        c.allowed().unwrap().to_vec()
    }

    #[test]
    fn only_copies_then_cites_its_source() {
        let mut c = constraint();
        // Any source token or a joiner may start; not a stop before anything was copied.
        assert_eq!(allowed(&mut c), [1, 2, 3, 4, 5, 7, 8, 50]);
        c.advance(2);
        // "2" stands in both sources; both continue with 3; the run is too short to cite.
        assert_eq!(allowed(&mut c), [3]);
        c.advance(3);
        // Now 4 (source 1) or 8 (source 2) may follow, or the citation opens.
        assert_eq!(allowed(&mut c), [4, 8, 90]);
        c.advance(8);
        assert_eq!(allowed(&mut c), [90]);
        c.advance(90);
        // The number is forced: the run was copied from source 2.
        assert_eq!(allowed(&mut c), [92]);
        c.advance(92);
        assert_eq!(allowed(&mut c), [93]);
        c.advance(93);
        assert_eq!(c.spans(), [Span { source: 1, from: 1, to: 4 }]);
        // Between runs, the answer may end.
        assert!(allowed(&mut c).contains(&0));
        c.advance(50);
        c.advance(1);
        c.advance(2);
        c.advance(90);
        c.advance(91);
        c.advance(93);
        assert_eq!(c.spans()[1], Span { source: 0, from: 0, to: 2 });
        // What was copied cannot be copied again: 1 and 2 stand only in copied runs now, while
        // 3 still starts a fresh run in source 1.
        let now = allowed(&mut c);
        assert!(!now.contains(&1) && !now.contains(&2) && now.contains(&3) && now.contains(&7), "{now:?}");
    }
}
