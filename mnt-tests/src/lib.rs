//! Helpers for the mesh process tests.
