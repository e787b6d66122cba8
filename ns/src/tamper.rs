//! A relay that misbehaves, for the tests of the end-to-end checks, in
//! debug builds only (release builds have none of it): with
//! `MESH_TEST_TAMPER=FILE` in its environment, a router changes the data
//! messages it passes on for others as FILE says, read again for each:
//! `flip` flips the first byte of the payload, `src=M` says the message
//! comes from machine M (with a path to match), `user=U` that it is sent
//! for user U; anything else changes nothing. The destination must refuse
//! each (mnt-tests/tests/endtoend.rs).

use crate::envelope::Envelope;

#[cfg(debug_assertions)]
pub(crate) fn relayed(env: &mut Envelope) {
    use std::path::PathBuf;
    use std::sync::{Arc, OnceLock};
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    let file = FILE.get_or_init(|| {
        let f = std::env::var_os("MESH_TEST_TAMPER").map(PathBuf::from);
        if let Some(f) = &f {
            tracing::warn!(file = %f.display(), "MESH_TEST_TAMPER: this router changes what it relays, as a test");
        }
        f
    });
    let Some(file) = file else { return };
    if env.kind != crate::envelope::Kind::Data {
        return;
    }
    let mode = std::fs::read_to_string(file).unwrap_or_default();
    let mode = mode.trim();
    if mode == "flip" {
        let mut d = env.data.to_vec();
        if let Some(b) = d.first_mut() {
            *b ^= 0x40;
        }
        env.data = d.into();
    } else if let Some(m) = mode.strip_prefix("src=").and_then(|m| m.parse().ok()) {
        env.src.machine = Some(m);
        if let Some(first) = env.via.first_mut() {
            *first = env.src.machine.clone().unwrap_or_else(|| first.clone());
        }
    } else if let Some(u) = mode.strip_prefix("user=") {
        env.user = Some(Arc::from(u));
    }
}

#[cfg(not(debug_assertions))]
pub(crate) fn relayed(_: &mut Envelope) {}
