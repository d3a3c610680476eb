//! The generator's stepping API, which the browser worker drives one step at a time so that it
//! can hear Stop between steps: stepping gives what `generate` gives, the streamed pieces add up
//! to the decoded tokens even when a character spans tokens, and cancelling between prefill
//! slices stops before any token is produced.

mod common;

use pocketrag::llm::{GenerateParams, Message, Step, StopReason};

fn prompt(question: &str) -> Vec<u32> {
    let g = common::shared_generator().lock().unwrap();
    let text = g
        .render_chat(&[Message::new("system", "You are a helpful assistant."), Message::new("user", question)])
        .unwrap();
    g.encode(&text).unwrap()
}

#[test]
fn stepping_matches_generate_and_pieces_add_up() {
    // Asking for Japanese makes the model emit characters whose UTF-8 bytes span tokens.
    let ids = prompt("Say 'good morning, friend' in Japanese, then in Greek.");
    let params = GenerateParams { max_tokens: 40, ..Default::default() };
    let mut g = common::shared_generator().lock().unwrap();

    let mut streamed = String::new();
    let whole = g.generate(&ids, &params, &mut |t| streamed.push_str(t), &|| false).unwrap();
    assert_eq!(streamed, whole.text);
    assert_eq!(whole.text, g.tokenizer().decode(&whole.tokens, true).unwrap());
    assert!(whole.text.chars().any(|c| c.len_utf8() > 1), "no multi-byte text in {:?}", whole.text);
    // Characters that span tokens come out whole; only a character that the token limit cuts
    // off at the very end may be left as U+FFFD (`a_stop_inside_a_character_keeps_its_bytes`).
    assert!(!whole.text.trim_end_matches('\u{FFFD}').contains('\u{FFFD}'), "{:?}", whole.text);

    let mut run = g.start(&ids, &params).unwrap();
    let (mut prefills, mut pieces) = (0, Vec::new());
    let stop = loop {
        match g.step(&mut run).unwrap() {
            Step::Prefill { done, total } => {
                prefills += 1;
                assert!(done <= total && total == ids.len());
            }
            Step::Token { text } => pieces.push(text),
            Step::Done { stop } => break stop,
        }
    };
    assert!(prefills >= 1);
    assert_eq!(stop, whole.stop);
    let stepped = run.finish();
    assert_eq!(stepped.tokens, whole.tokens, "greedy decoding is deterministic on one machine");
    assert_eq!(pieces.concat(), whole.text);
    // An empty piece means the token ended inside a character; some must carry text.
    assert!(pieces.iter().filter(|p| !p.is_empty()).count() > 1);
}

/// Stopped after every possible token count, inside a character or not, the answer holds the
/// text of every token produced: the bytes of a character cut off by the stop are kept.
#[test]
fn a_stop_inside_a_character_keeps_its_bytes() {
    let ids = prompt("Say 'good morning, friend' in Japanese, then in Greek.");
    let mut g = common::shared_generator().lock().unwrap();
    let mut cut_inside = 0;
    for max_tokens in 1..=24 {
        let params = GenerateParams { max_tokens, ..Default::default() };
        let mut streamed = String::new();
        let got = g.generate(&ids, &params, &mut |t| streamed.push_str(t), &|| false).unwrap();
        let decoded = g.tokenizer().decode(&got.tokens, true).unwrap();
        assert_eq!(got.text, decoded, "max_tokens {max_tokens}");
        assert_eq!(streamed, got.text, "max_tokens {max_tokens}");
        cut_inside += usize::from(decoded.ends_with('\u{FFFD}'));
    }
    assert!(cut_inside > 0, "no stop fell inside a character: the test proves nothing");
}

#[test]
fn cancel_between_prefill_slices_produces_nothing() {
    let long = "Tell me about the sea. ".repeat(60);
    let ids = prompt(&long);
    let short = prompt("What colour is the sky?");
    let mut g = common::shared_generator().lock().unwrap();
    let mut run = g.start(&ids, &GenerateParams::default()).unwrap();
    let Step::Prefill { done, total } = g.step(&mut run).unwrap() else { panic!("prefill comes first") };
    assert!(done < total, "a {total}-token prompt takes more than one prefill slice");
    run.cancel();
    assert_eq!(g.step(&mut run).unwrap(), Step::Done { stop: StopReason::Cancelled });
    let gen = run.finish();
    assert_eq!((gen.stop, gen.tokens.len(), gen.text.as_str()), (StopReason::Cancelled, 0, ""));

    // The model is ready for the next question straight away.
    let gen =
        g.generate(&short, &GenerateParams { max_tokens: 8, ..Default::default() }, &mut |_| {}, &|| false).unwrap();
    assert!(!gen.tokens.is_empty());
}
