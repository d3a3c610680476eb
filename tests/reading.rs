//! The generator as the gate's reader (`rag::reading`): a sentence that states what the question
//! asks about leaves its words likely; one that names something else there makes that word less
//! likely. And the log-probabilities it reads are the model's own.

mod common;

use pocketrag::rag::reading::question_pmi;

#[test]
fn a_sentence_about_something_else_makes_the_question_less_likely() {
    let mut g = common::shared_generator().lock().unwrap();
    let question = "When was the Harrow Point lighthouse first lit?";
    let states = question_pmi(&mut g, "The Harrow Point lighthouse was first lit in 1871.", question).unwrap();
    let elsewhere = question_pmi(&mut g, "The Cape Morrow lighthouse was first lit in 1871.", question).unwrap();
    assert!(states > elsewhere, "stating it: {states}, about another lighthouse: {elsewhere}");
    assert!(elsewhere < 0.0, "a lighthouse of another name should make \"Harrow\" less likely: {elsewhere}");
}

#[test]
fn log_probs_are_the_models_next_token_probabilities() {
    let mut g = common::shared_generator().lock().unwrap();
    let context = g.encode("The capital of France is").unwrap();
    let cont = g.encode(" Paris, a city").unwrap();
    let lp = g.log_probs(&context, &cont).unwrap();
    assert_eq!(lp.len(), cont.len());
    assert!(lp.iter().all(|&p| p <= 0.0 && p.is_finite()), "{lp:?}");
    // " Paris" is the likeliest next word here, far above chance over 49k tokens.
    assert!(lp[0] > -3.0, "{lp:?}");
    // The same tokens read from a longer context give the same numbers for the shared part.
    let again = g.log_probs(&context, &cont[..1]).unwrap();
    assert!((again[0] - lp[0]).abs() < 1e-4);
    assert!(g.log_probs(&[], &cont).is_err());
}
