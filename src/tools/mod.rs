//! The offline tools: they work on a stopped pipeline's offsets and state, or check its set-up,
//! and are not the engine (which they call into, as `flumen offsets reset --to-savepoint` calls
//! the runner's restore).
//!
//! - [`reset`]: `flumen offsets show|reset`, with [`reset::plan`] its decisions, free of I/O.
//! - [`doctor`]: `flumen doctor`.

pub mod doctor;
pub mod reset;
