//! See the suite's `main.rs`.
