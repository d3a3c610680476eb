//! Running out of memory in WebAssembly does not fail an allocation, it kills the instance (and
//! with it everything indexed in the tab). So before indexing a document the engine asks for the
//! memory the work will need, with a fallible reservation, and refuses the document with a clear
//! message when it cannot have it; what was indexed before is kept.

use crate::error::{Error, Result};

/// Peak working memory for indexing a document of `len` bytes: its text, the chunks (which
/// overlap), their vectors (1.5 KB each, one per ~100 words) and keyword postings, and the
/// embedder's activations, with margin. Measured peaks are below 6x the text size.
pub fn indexing_need(len: usize) -> usize {
    (16 << 20) + len.saturating_mul(10)
}

/// The linear memory the wasm instance has grown to; natively the OS decides, so nothing is known.
pub fn in_use() -> Option<usize> {
    #[cfg(target_arch = "wasm32")]
    {
        Some(core::arch::wasm32::memory_size(0) * 65536)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        None
    }
}

/// Fail with a message naming `what` unless `need` more bytes can be had, both under `limit` (if
/// one is set) and from the allocator right now.
pub fn ensure_room(what: &str, need: usize, limit: Option<usize>) -> Result<()> {
    let refuse = |why: String| {
        Err(Error::document(
            what,
            format!(
                "not enough memory to index it ({} MB needed, {why}); the documents already indexed are kept. \
                 Remove some documents or split this one.",
                need >> 20
            ),
        ))
    };
    if let (Some(limit), Some(used)) = (limit, in_use()) {
        if used.saturating_add(need) > limit {
            return refuse(format!("{} MB of {} MB in use", used >> 20, limit >> 20));
        }
    }
    let mut probe: Vec<u8> = Vec::new();
    if probe.try_reserve_exact(need).is_err() {
        return refuse("the allocator could not provide it".into());
    }
    Ok(())
}
