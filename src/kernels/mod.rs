//! The numeric floor: the CPU kernels that both models stand on (the generator in `llm`, the
//! embedder in `embed`) and the GPU tests check against. Nothing here knows about a model; it
//! imports nothing from the rest of the crate but its error type.

mod blocks;
pub mod dense;
pub mod f4;
pub mod int8;
pub mod q8;
mod q8_prompt;
pub mod random;
pub mod vecmath;
