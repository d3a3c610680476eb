//! Fitting the evidence scorer and the support gate (`pocketrag calibrate`).
//!
//! Questions of SQuAD articles that are neither trained on nor reported are asked against one
//! collection of their articles. For every question we keep the features of each retrieved
//! sentence and whether it holds a gold answer; a logistic ranker is fitted on those, then a
//! logistic gate on the best sentence's features, labelled by whether the question is
//! answerable. The gate's threshold is the highest that wrongly abstains on at most a set share
//! of answerable questions. The command prints the constants to paste into `rag::evidence`.

use super::squad::{self, Qa};
use crate::error::Result;
use crate::rag::evidence::{self, Features, GateFeatures, Scored};
use crate::rag::Engine;
use serde::Serialize;

/// What one question's retrieval gave the scorer.
#[derive(Debug, Clone)]
pub struct Observation {
    pub answerable: bool,
    /// A question of another article, asked of this collection: unanswerable here, and unlike
    /// SQuAD 2.0's written-to-mislead ones, the kind a user asks of the wrong documents.
    pub foreign: bool,
    /// Retrieval found nothing above the relevance bar: the engine abstains before any scoring.
    pub below_relevance: bool,
    pub sentences: Vec<Scored>,
    /// `holds[i]`: sentence i contains a gold answer.
    pub holds: Vec<bool>,
}

/// Retrieve for `qa` as the default answer mode does and record the evidence.
pub fn observe(engine: &mut Engine, qa: &Qa, k: usize) -> Result<Observation> {
    let (found, qv) = engine.search_with_vector(&qa.question, k)?;
    let min = engine.settings.min_relevance;
    let best = found.hits.iter().map(|h| h.score).fold(f32::NEG_INFINITY, f32::max);
    let relevant: Vec<_> = found.hits.into_iter().filter(|h| h.score >= min).collect();
    let sentences = if relevant.is_empty() { vec![] } else { engine.evidence(&qa.question, &qv, &relevant)? };
    let holds = sentences.iter().map(|s| squad::contains(&s.sentence.text, &qa.answers)).collect();
    Ok(Observation { answerable: qa.answerable(), foreign: false, below_relevance: best < min, sentences, holds })
}

/// An answerable question made unanswerable: retrieval goes on as usual, but every passage and
/// sentence holding a gold answer is taken away. The topic stays (the nearby paragraphs of the
/// same article are still there), only the fact is gone: the near miss a user meets when the
/// documents discuss the subject but never state what was asked.
pub fn observe_without_answer(engine: &mut Engine, qa: &Qa, k: usize) -> Result<Observation> {
    let (found, qv) = engine.search_with_vector(&qa.question, k + 4)?;
    let min = engine.settings.min_relevance;
    let kept: Vec<_> = found.hits.into_iter().filter(|h| !squad::contains(&h.text, &qa.answers)).take(k).collect();
    let best = kept.iter().map(|h| h.score).fold(f32::NEG_INFINITY, f32::max);
    let relevant: Vec<_> = kept.into_iter().filter(|h| h.score >= min).collect();
    let mut sentences = if relevant.is_empty() { vec![] } else { engine.evidence(&qa.question, &qv, &relevant)? };
    sentences.retain(|s| !squad::contains(&s.sentence.text, &qa.answers));
    let holds = vec![false; sentences.len()];
    Ok(Observation { answerable: false, foreign: true, below_relevance: best < min, sentences, holds })
}

/// [`observe`] for a question of an article outside the collection: unanswerable here.
pub fn observe_foreign(engine: &mut Engine, qa: &Qa, k: usize) -> Result<Observation> {
    let mut o = observe(engine, qa, k)?;
    o.answerable = false;
    o.foreign = true;
    o.holds.iter_mut().for_each(|h| *h = false);
    Ok(o)
}

/// The questions a calibration asks besides every `every`-th question of its own articles.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extra<'a> {
    /// Every N-th answerable question again, with its answer taken out of what retrieval
    /// finds: an unanswerable near miss (0: none).
    pub near_miss_every: usize,
    /// Other articles' answerable questions, every N-th, asked of this collection as
    /// unanswerable ones (articles of the collection itself are skipped).
    pub foreign: Option<(&'a [squad::Article], usize)>,
}

/// Index `articles` into `engine` as one collection, then observe every `every`-th of their
/// questions and the `extra` ones. `progress(what, done, total)` counts each kind from 1.
pub fn observe_set(
    engine: &mut Engine,
    articles: &[&squad::Article],
    every: usize,
    k: usize,
    extra: &Extra,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Vec<Observation>> {
    for a in articles {
        let (name, text) = squad::document(a);
        engine.add_document(&name, text.as_bytes(), &mut |_, _| {})?;
    }
    let own = || articles.iter().flat_map(|a| a.paragraphs.iter().flat_map(|p| &p.qas));
    let asked: Vec<&Qa> = own().step_by(every.max(1)).collect();
    let near: Vec<&Qa> = match extra.near_miss_every {
        0 => vec![],
        n => own().filter(|qa| qa.answerable()).step_by(n).collect(),
    };
    let foreign: Vec<&Qa> = match extra.foreign {
        None => vec![],
        Some((others, n)) => others
            .iter()
            .filter(|o| !articles.iter().any(|a| a.title == o.title))
            .flat_map(|a| a.paragraphs.iter().flat_map(|p| &p.qas))
            .filter(|qa| qa.answerable())
            .step_by(n.max(1))
            .collect(),
    };
    type Observe = fn(&mut Engine, &Qa, usize) -> Result<Observation>;
    let kinds: [(&str, &[&Qa], Observe); 3] = [
        ("questions", &asked, observe),
        ("near misses", &near, observe_without_answer),
        ("foreign questions", &foreign, observe_foreign),
    ];
    let mut obs = Vec::new();
    for (what, qas, see) in kinds {
        for (i, qa) in qas.iter().enumerate() {
            obs.push(see(engine, qa, k)?);
            progress(what, i + 1, qas.len());
        }
    }
    Ok(obs)
}

/// The fit's figures as the command prints them, for the collection of `titles`.
pub fn summary(c: &Calibration, titles: &[String]) -> String {
    let mut out = format!(
        "{} questions ({} answerable) from {}\n\
         best sentence holds a gold answer: {:.3} before fitting, {:.3} after (top 2: {:.3}, top 3: {:.3})\n\
         gate at {:.3}: abstains on {:.3} of unanswerable questions (precision {:.3}), wrongly on {:.3} of answerable\n\
         and on {:.3} of {} constructed unanswerable questions (near misses, other articles' questions)\n\n",
        c.questions,
        c.answerable,
        titles.join(", "),
        c.top1_before,
        c.top1,
        c.top2,
        c.top3,
        c.gate_threshold,
        c.abstain_recall,
        c.abstain_precision,
        c.wrongly_abstained,
        c.foreign_abstained,
        c.foreign
    );
    out.push_str("quoted answers (after fitting): relative bar, answers holding a gold answer, sentences quoted\n");
    for (r, hit, quoted) in &c.selection {
        out.push_str(&format!("  {r:.1}  {hit:.3}  {quoted:.2}\n"));
    }
    out
}

/// L2-regularised logistic regression by Newton's method. Returns the bias, then one weight per
/// column of `x`. Rows are few thousand and columns under ten, so exact Newton steps are cheap
/// and converge in a handful of iterations.
pub fn fit_logistic(x: &[Vec<f64>], y: &[bool], l2: f64) -> Vec<f64> {
    let d = x.first().map_or(0, Vec::len) + 1;
    let mut w = vec![0.0; d];
    let row = |i: usize| std::iter::once(1.0).chain(x[i].iter().copied());
    for _ in 0..50 {
        let mut grad = vec![0.0; d];
        let mut hess = vec![vec![0.0; d]; d];
        for i in 0..x.len() {
            let z: f64 = row(i).zip(&w).map(|(a, b)| a * b).sum();
            let p = 1.0 / (1.0 + (-z).exp());
            let r = p - if y[i] { 1.0 } else { 0.0 };
            let v: Vec<f64> = row(i).collect();
            for a in 0..d {
                grad[a] += r * v[a];
                for b in 0..d {
                    hess[a][b] += p * (1.0 - p) * v[a] * v[b];
                }
            }
        }
        // The bias is not shrunk.
        hess[0][0] += 1e-9;
        if newton_step(&mut w, grad, hess, l2, 1) < 1e-7 {
            break;
        }
    }
    w
}

/// One Newton step on `w` for the gradient and Hessian of a loss, with an L2 penalty of `l2` on
/// the weights from index `shrunk` on. Returns the step's largest component.
fn newton_step(w: &mut [f64], mut grad: Vec<f64>, mut hess: Vec<Vec<f64>>, l2: f64, shrunk: usize) -> f64 {
    for a in shrunk..w.len() {
        grad[a] += l2 * w[a];
        hess[a][a] += l2;
    }
    let step = solve(hess, grad);
    for (wa, sa) in w.iter_mut().zip(&step) {
        *wa -= sa;
    }
    step.iter().map(|s| s.abs()).fold(0.0, f64::max)
}

/// A ranker for "which sentence of this question holds the answer": a conditional logit (softmax
/// over each group's rows, the target spread evenly over its positive rows), fitted by Newton's
/// method. Ranking is what the answer uses, so this beats a per-sentence logistic at putting a
/// gold sentence first. Groups without a positive row carry no information here and are skipped.
/// Returns one weight per column (no bias: it cancels in a softmax).
pub fn fit_softmax(groups: &[(Vec<Vec<f64>>, Vec<bool>)], l2: f64) -> Vec<f64> {
    let d = groups.iter().find_map(|(x, _)| x.first()).map_or(0, Vec::len);
    let mut w = vec![0.0; d];
    for _ in 0..50 {
        let mut grad = vec![0.0; d];
        let mut hess = vec![vec![0.0; d]; d];
        for (x, y) in groups {
            let positives = y.iter().filter(|&&h| h).count();
            if positives == 0 || x.len() < 2 {
                continue;
            }
            let z: Vec<f64> = x.iter().map(|r| r.iter().zip(&w).map(|(a, b)| a * b).sum()).collect();
            let top = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - top).exp()).collect();
            let total: f64 = e.iter().sum();
            let p: Vec<f64> = e.iter().map(|v| v / total).collect();
            let mean: Vec<f64> = (0..d).map(|a| x.iter().zip(&p).map(|(r, pi)| pi * r[a]).sum()).collect();
            for (i, r) in x.iter().enumerate() {
                let target = if y[i] { 1.0 / positives as f64 } else { 0.0 };
                for a in 0..d {
                    grad[a] += (p[i] - target) * r[a];
                    for b in 0..d {
                        hess[a][b] += p[i] * (r[a] - mean[a]) * (r[b] - mean[b]);
                    }
                }
            }
        }
        if newton_step(&mut w, grad, hess, l2, 0) < 1e-7 {
            break;
        }
    }
    w
}

/// Solve `a x = b` by Gaussian elimination with partial pivoting (a is small and positive definite).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap_or(c);
        a.swap(c, p);
        b.swap(c, p);
        let pivot = a[c][c];
        if pivot.abs() < 1e-12 {
            continue;
        }
        for r in c + 1..n {
            let f = a[r][c] / pivot;
            for k in c..n {
                a[r][k] -= f * a[c][k];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r][k] * x[k]).sum();
        x[r] = if a[r][r].abs() < 1e-12 { 0.0 } else { (b[r] - s) / a[r][r] };
    }
    x
}

#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    pub questions: usize,
    pub answerable: usize,
    pub rank_weights: Vec<f32>,
    pub gate_weights: Vec<f32>,
    pub gate_threshold: f32,
    /// Among answerable questions with evidence: share whose best sentence holds a gold answer,
    /// before and after fitting, and whose top two or three hold one.
    pub top1_before: f64,
    pub top1: f64,
    pub top2: f64,
    pub top3: f64,
    /// With the fitted gate at its threshold, over the collection's own questions.
    pub abstain_precision: f64,
    pub abstain_recall: f64,
    pub wrongly_abstained: f64,
    /// Foreign questions (if any) and the share of them abstained on.
    pub foreign: usize,
    pub foreign_abstained: f64,
    /// For each tried [`evidence::QUOTE_RELATIVE`]: the share of answerable questions with
    /// evidence whose quoted answer holds a gold answer, and the mean number of sentences quoted.
    pub selection: Vec<(f32, f64, f64)>,
}

fn share(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 / of as f64
    }
}

fn feature_row(f: &Features) -> Vec<f64> {
    f.values().iter().map(|&v| v as f64).collect()
}

/// Fit ranker and gate on `obs`; the threshold abstains on at most `max_wrong_abstain` of the
/// answerable questions (counting those retrieval already abstains on).
pub fn calibrate(mut obs: Vec<Observation>, max_wrong_abstain: f64) -> Calibration {
    let answerable: Vec<usize> =
        (0..obs.len()).filter(|&i| obs[i].answerable && !obs[i].sentences.is_empty()).collect();
    let top_share = |obs: &[Observation], n: usize| {
        share(answerable.iter().filter(|&&i| obs[i].holds.iter().take(n).any(|&h| h)).count(), answerable.len())
    };
    let top1_before = top_share(&obs, 1);

    let groups: Vec<(Vec<Vec<f64>>, Vec<bool>)> = answerable
        .iter()
        .map(|&i| (obs[i].sentences.iter().map(|s| feature_row(&s.features)).collect(), obs[i].holds.clone()))
        .collect();
    let direction = fit_softmax(&groups, 1.0);
    // The softmax fixes the order; a one-feature logistic on its score turns that into a
    // probability that a sentence holds the answer, which the gate reads.
    let (mut z, mut y) = (Vec::new(), Vec::new());
    for (x, h) in &groups {
        for (r, &label) in x.iter().zip(h) {
            z.push(vec![r.iter().zip(&direction).map(|(a, b)| a * b).sum::<f64>()]);
            y.push(label);
        }
    }
    let scale = fit_logistic(&z, &y, 0.0);
    let rank_weights: Vec<f32> =
        std::iter::once(scale[0]).chain(direction.iter().map(|w| w * scale[1])).map(|w| w as f32).collect();
    for o in obs.iter_mut() {
        let mut pairs: Vec<(Scored, bool)> = o.sentences.drain(..).zip(o.holds.drain(..)).collect();
        for (s, _) in pairs.iter_mut() {
            s.score = evidence::logistic(&rank_weights, &s.features.values());
        }
        pairs.sort_by(|a, b| b.0.score.total_cmp(&a.0.score));
        (o.sentences, o.holds) = pairs.into_iter().unzip();
    }
    let (top1, top2, top3) = (top_share(&obs, 1), top_share(&obs, 2), top_share(&obs, 3));

    let selection = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
        .iter()
        .map(|&r| {
            let (mut hit, mut quoted) = (0, 0);
            for &i in &answerable {
                let picked = evidence::select(&obs[i].sentences, r);
                quoted += picked.len();
                hit += usize::from(obs[i].holds.iter().take(picked.len()).any(|&h| h));
            }
            (r, share(hit, answerable.len()), share(quoted, answerable.len()))
        })
        .collect();

    let scored: Vec<usize> =
        (0..obs.len()).filter(|&i| !obs[i].below_relevance && !obs[i].sentences.is_empty()).collect();
    let gx: Vec<Vec<f64>> = scored
        .iter()
        .map(|&i| GateFeatures::of(&obs[i].sentences).values().iter().map(|&v| v as f64).collect())
        .collect();
    let gy: Vec<bool> = scored.iter().map(|&i| obs[i].answerable).collect();
    let gate_weights: Vec<f32> = fit_logistic(&gx, &gy, 1.0).into_iter().map(|w| w as f32).collect();
    let support = |o: &Observation| {
        if o.below_relevance || o.sentences.is_empty() {
            0.0
        } else {
            evidence::logistic(&gate_weights, &GateFeatures::of(&o.sentences).values())
        }
    };
    let n_answerable = obs.iter().filter(|o| o.answerable).count();
    let foreign = obs.iter().filter(|o| o.foreign).count();
    let mut answerable_support: Vec<f32> = obs.iter().filter(|o| o.answerable).map(support).collect();
    answerable_support.sort_by(f32::total_cmp);
    // The highest threshold that leaves at most the allowed share of answerable questions below it.
    let allowed = (max_wrong_abstain * n_answerable as f64).floor() as usize;
    let gate_threshold = answerable_support.get(allowed).copied().unwrap_or(0.5).max(1e-4);
    let abstains = |o: &Observation| support(o) < gate_threshold;
    let own = || obs.iter().filter(|o| !o.foreign);
    let abstained = own().filter(|o| abstains(o)).count();
    let right = own().filter(|o| abstains(o) && !o.answerable).count();
    let unanswerable = own().count() - n_answerable;
    let foreign_abstained = share(obs.iter().filter(|o| o.foreign && abstains(o)).count(), foreign);
    Calibration {
        questions: obs.len(),
        answerable: n_answerable,
        rank_weights,
        gate_weights,
        gate_threshold,
        top1_before,
        top1,
        top2,
        top3,
        abstain_precision: share(right, abstained),
        abstain_recall: share(right, unanswerable),
        wrongly_abstained: share(abstained - right, n_answerable),
        foreign,
        foreign_abstained,
        selection,
    }
}

/// The constants for `rag::evidence`, as Rust.
/// `prefix` is "" for the plain scorer, "VERIFIED_" for the one fitted with the verifier.
pub fn constants(c: &Calibration, prefix: &str) -> String {
    let list = |w: &[f32]| w.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(", ");
    format!(
        "pub const {prefix}RANK_WEIGHTS: [f32; {}] = [{}];\npub const {prefix}GATE_WEIGHTS: [f32; {}] = [{}];\npub const {prefix}GATE_THRESHOLD: f32 = {:.3};\n",
        c.rank_weights.len(),
        list(&c.rank_weights),
        c.gate_weights.len(),
        list(&c.gate_weights),
        c.gate_threshold
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logistic_fit_recovers_a_separating_direction() {
        // y = 1 when 2a - b > 0.5, with a little label noise.
        let mut x = Vec::new();
        let mut y = Vec::new();
        let mut state = 7u64;
        for i in 0..2000 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let a = (state >> 33) as f64 / (1u64 << 31) as f64;
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let b = (state >> 33) as f64 / (1u64 << 31) as f64;
            x.push(vec![a, b]);
            y.push((2.0 * a - b > 0.5) != (i % 20 == 0));
        }
        let w = fit_logistic(&x, &y, 0.1);
        assert!(w[1] > 0.0 && w[2] < 0.0, "{w:?}");
        assert!((w[1] / -w[2] - 2.0).abs() < 0.5, "{w:?}");
        assert!((-w[0] / w[1] - 0.25).abs() < 0.1, "{w:?}");
    }
}
