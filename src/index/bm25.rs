//! Okapi BM25 keyword search. Embeddings miss exact names, numbers and rare terms; BM25 catches
//! them, and fusion takes the best of both.

use std::borrow::Cow;
use std::collections::HashMap;

const K1: f32 = 1.2;
const B: f32 = 0.75;

/// Lower-cased alphanumeric runs. Deliberately simple (no stemming): the vector side already
/// handles paraphrase, this side is for exact terms. Terms already in lower-case ASCII (most of
/// them) are borrowed: rebuilding the index of a large collection at load allocated a string per
/// word otherwise.
pub fn terms(text: &str) -> impl Iterator<Item = Cow<'_, str>> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).map(|t| {
        if t.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
            Cow::Borrowed(t)
        } else {
            Cow::Owned(t.to_lowercase())
        }
    })
}

#[derive(Default)]
pub struct Bm25 {
    postings: HashMap<String, Vec<(u32, u32)>>,
    /// Length in terms, by slot (0 for removed slots).
    lengths: Vec<u32>,
    total_len: u64,
    live: usize,
}

impl Bm25 {
    /// Index `text` under `slot`. Slots must be added in increasing order.
    pub fn add(&mut self, slot: u32, text: &str) {
        let mut counts: HashMap<Cow<str>, u32> = HashMap::new();
        let mut len = 0;
        for t in terms(text) {
            *counts.entry(t).or_default() += 1;
            len += 1;
        }
        for (t, c) in counts {
            match self.postings.get_mut(t.as_ref()) {
                Some(list) => list.push((slot, c)),
                None => {
                    self.postings.insert(t.into_owned(), vec![(slot, c)]);
                }
            }
        }
        if self.lengths.len() <= slot as usize {
            self.lengths.resize(slot as usize + 1, 0);
        }
        self.lengths[slot as usize] = len;
        self.total_len += len as u64;
        self.live += 1;
    }

    /// Keep a slot number taken but empty (loading a file that had removals).
    pub fn add_removed(&mut self) {
        self.lengths.push(0);
    }

    /// Forget `slot`; `text` must be what was added under it.
    pub fn remove(&mut self, slot: u32, text: &str) {
        let Some(len) = self.lengths.get_mut(slot as usize) else { return };
        self.total_len -= *len as u64;
        *len = 0;
        self.live -= 1;
        let unique: std::collections::HashSet<Cow<str>> = terms(text).collect();
        for t in unique {
            if let Some(list) = self.postings.get_mut(t.as_ref()) {
                list.retain(|&(s, _)| s != slot);
                if list.is_empty() {
                    self.postings.remove(t.as_ref());
                }
            }
        }
    }

    /// How rare `term` (one of [`terms`]' output) is across the indexed chunks, on BM25's scale:
    /// from about 0.1 for a term in every chunk up to [`Bm25::max_idf`] for one in none.
    pub fn idf(&self, term: &str) -> f32 {
        let n = self.live as f32;
        let df = self.postings.get(term).map_or(0, Vec::len) as f32;
        ((n - df + 0.5) / (df + 0.5) + 1.0).ln()
    }

    /// The IDF of a term no chunk contains.
    pub fn max_idf(&self) -> f32 {
        self.idf("")
    }

    /// The `k` best-scoring slots for `query`, best first.
    pub fn search(&self, query: &str, k: usize) -> Vec<(u32, f32)> {
        if self.live == 0 {
            return vec![];
        }
        let n = self.live as f32;
        let avg = self.total_len as f32 / n;
        let mut scores: HashMap<u32, f32> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for t in terms(query) {
            if !seen.insert(t.clone()) {
                continue;
            }
            let Some(list) = self.postings.get(t.as_ref()) else { continue };
            let df = list.len() as f32;
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for &(slot, tf) in list {
                let tf = tf as f32;
                let len = self.lengths[slot as usize] as f32;
                let s = idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avg));
                *scores.entry(slot).or_default() += s;
            }
        }
        let mut hits: Vec<(u32, f32)> = scores.into_iter().collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_rare_terms_and_forgets_removed() {
        let mut b = Bm25::default();
        b.add(0, "the cat sat on the mat");
        b.add(1, "the dog chased the cat");
        b.add(2, "quantization shrinks model weights");
        let hits = b.search("Quantization of weights", 3);
        assert_eq!(hits[0].0, 2);
        assert_eq!(hits.len(), 1);
        assert_eq!(b.search("cat", 3).len(), 2);
        b.remove(2, "quantization shrinks model weights");
        assert!(b.search("quantization", 3).is_empty());
    }

    #[test]
    fn terms_are_lower_cased_alphanumeric_runs() {
        let t: Vec<String> = terms("GPU-side ÅNGSTRÖM, x86_64 naïve").map(Cow::into_owned).collect();
        assert_eq!(t, ["gpu", "side", "ångström", "x86", "64", "naïve"]);
    }
}
