//! Local users for tests that need a second one: made with `useradd` and
//! removed when the guard drops, passed or not; a user that was there
//! already is used and left alone.

use std::process::Command;

/// A local user held for a test.
pub struct LocalUser {
    pub name: String,
    pub uid: u32,
    /// Made by the test: removed after.
    made: bool,
}

impl LocalUser {
    /// User `name` (and its group), made if missing; `None` if it cannot be.
    pub fn ensure(name: &str) -> Option<LocalUser> {
        let find = || nix::unistd::User::from_name(name).ok().flatten().map(|u| u.uid.as_raw());
        if let Some(uid) = find() {
            return Some(LocalUser { name: name.into(), uid, made: false });
        }
        let made = Command::new("useradd")
            .args(["--system", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name])
            .status()
            .is_ok_and(|s| s.success());
        let uid = find().filter(|_| made)?;
        Some(LocalUser { name: name.into(), uid, made: true })
    }
}

impl Drop for LocalUser {
    fn drop(&mut self) {
        if self.made {
            let _ = Command::new("userdel").arg(&self.name).status();
        }
    }
}
