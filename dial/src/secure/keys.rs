//! Machine identities: [`Identity`] (a Curve25519 static key pair, kept in
//! a key file) and [`PublicKey`] (what a deployment file pins), and
//! [`Trust`], the set of pinned keys a link may be made with.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;

use data_encoding::BASE64;
use sha2::{Digest, Sha256};
use snow::params::DHChoice;
use snow::resolvers::{CryptoResolver, DefaultResolver};

/// Bytes in a Curve25519 key, private or public.
pub(crate) const KEY_LEN: usize = 32;

/// A key file is a few short lines; anything bigger is not one, and we
/// do not read it all into memory to find out.
const KEY_FILE_MAX: u64 = 4096;

/// Hex characters in a fingerprint: 64 bits, plenty to tell a handful of
/// machines apart by eye, short enough for a log line.
const FINGERPRINT_HEX: usize = 16;

/// A machine's public key: what a deployment file pins and what a peer
/// proves it holds the private half of during the handshake.
///
/// Written as standard base64 with padding (44 characters), the way
/// WireGuard writes its keys, e.g.
/// `YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowMTIzNDU=`. Parsing accepts exactly
/// that, surrounding whitespace aside.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// The key from its 32 raw bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PublicKey(bytes)
    }

    /// The 32 raw bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// A short name for the key, for logs and status files: the first 16
    /// hex digits (64 bits) of the SHA-256 of its 32 raw bytes. From a
    /// shell: `echo KEY | base64 -d | sha256sum | cut -c1-16`.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0);
        let mut hex = String::with_capacity(FINGERPRINT_HEX);
        for b in digest.iter().take(FINGERPRINT_HEX / 2) {
            hex.push_str(&format!("{b:02x}"));
        }
        hex
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64.encode(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// Why a public key did not parse. Displays as
/// `bad public key "INPUT": REASON`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad public key {input:?}: {reason}")]
pub struct KeyError {
    input: String,
    reason: &'static str,
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let bad = |reason| KeyError {
            // Keys come from hand-edited files: show what was given, but
            // not pages of it.
            input: s.chars().take(64).collect(),
            reason,
        };
        decode_key(s.trim()).map(PublicKey).map_err(bad)
    }
}

/// Base64 of exactly 32 bytes, or why not. The reason never quotes the
/// input, because the same code reads private keys.
fn decode_key(s: &str) -> Result<[u8; KEY_LEN], &'static str> {
    let bytes = BASE64.decode(s.as_bytes()).map_err(|_| "not base64 (standard alphabet, with padding)")?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| "not 32 bytes (44 base64 characters)")
}

/// A machine's key pair: a Curve25519 static key for the Noise handshake.
///
/// Kept in a key file of two lines (blank lines and `#` comments aside):
///
/// ```text
/// # mesh machine key: keep it secret (mode 0600)
/// private BASE64-OF-32-BYTES
/// public BASE64-OF-32-BYTES
/// ```
///
/// `public` is there for people (`grep public a.key`) and is checked
/// against the private key on load. `Debug` never shows the private key.
#[derive(Clone)]
pub struct Identity {
    private: [u8; KEY_LEN],
    public: PublicKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("public", &self.public).finish_non_exhaustive()
    }
}

impl Identity {
    /// A new random key pair, from the operating system's random number
    /// generator.
    ///
    /// # Panics
    ///
    /// If the operating system gives no random numbers (`getrandom(2)`
    /// fails), which leaves nothing sensible to do.
    #[must_use]
    pub fn generate() -> Identity {
        let kp = super::builder().generate_keypair().expect("the operating system's random number generator works");
        let private = <[u8; KEY_LEN]>::try_from(kp.private.as_slice()).expect("Curve25519 private keys are 32 bytes");
        Identity::from_private(private)
    }

    /// The identity whose private key is `private` (any 32 bytes are a
    /// valid Curve25519 private key; the public key is derived).
    #[must_use]
    pub fn from_private(private: [u8; KEY_LEN]) -> Identity {
        let mut dh = DefaultResolver.resolve_dh(&DHChoice::Curve25519).expect("snow's default resolver has Curve25519");
        dh.set(&private);
        let public = <[u8; KEY_LEN]>::try_from(dh.pubkey()).expect("Curve25519 public keys are 32 bytes");
        Identity { private, public: PublicKey(public) }
    }

    /// This machine's public key, for the deployment file.
    #[must_use]
    pub fn public(&self) -> PublicKey {
        self.public
    }

    pub(crate) fn private_bytes(&self) -> &[u8; KEY_LEN] {
        &self.private
    }

    /// Reads a key file.
    ///
    /// # Errors
    ///
    /// `PermissionDenied` when group or others have any access to the file
    /// (a private key others can read is no longer private; the message
    /// says to `chmod 600` it); `InvalidData` for a file that is not a key
    /// file, naming the line; `InvalidData` when `public` is not the
    /// private key's public half; otherwise the error from opening or
    /// reading. Every message starts with the path. None quotes the
    /// private key.
    pub fn load(path: impl AsRef<Path>) -> io::Result<Identity> {
        let path = path.as_ref();
        let ctx = |e: io::Error| crate::with_context(e, format_args!("key file {}", path.display()));
        let file = File::open(path).map_err(ctx)?;
        // The mode of the file we opened, not of whatever the path names
        // by the time we look again.
        let mode = file.metadata().map_err(ctx)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "key file {p} is open to group or others (mode {m:04o}); \
                     a private key must be readable by its owner alone: chmod 600 {p}",
                    p = path.display(),
                    m = mode & 0o7777
                ),
            ));
        }
        let mut text = String::new();
        file.take(KEY_FILE_MAX + 1).read_to_string(&mut text).map_err(ctx)?;
        if text.len() as u64 > KEY_FILE_MAX {
            return Err(ctx(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("longer than {KEY_FILE_MAX} bytes; not a key file"),
            )));
        }
        Identity::parse(&text).map_err(|m| ctx(io::Error::new(io::ErrorKind::InvalidData, m)))
    }

    /// Parses the text of a key file; the error says what and where.
    fn parse(text: &str) -> Result<Identity, String> {
        let mut private = None;
        let mut public = None;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (field, value) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("line {n}: expected `private KEY` or `public KEY`"))?;
            let slot = match field {
                "private" => &mut private,
                "public" => &mut public,
                other => {
                    let other: String = other.chars().take(32).collect();
                    return Err(format!("line {n}: unknown field {other:?} (want private or public)"));
                }
            };
            if slot.is_some() {
                return Err(format!("line {n}: second {field} line"));
            }
            *slot = Some(decode_key(value.trim()).map_err(|r| format!("line {n}: {field} key is {r}"))?);
        }
        let private = private.ok_or("no private line")?;
        let id = Identity::from_private(private);
        if let Some(public) = public {
            if public != id.public.0 {
                return Err("the public line is not the public key of the private line".into());
            }
        }
        Ok(id)
    }

    /// Writes a new key file at `path`, mode 0600, and syncs it to disk.
    ///
    /// # Errors
    ///
    /// `AlreadyExists` when something is at `path`: a key file is never
    /// overwritten, since losing a machine's key means re-pinning it
    /// everywhere. Otherwise the error from creating or writing the file.
    /// Messages start with the path.
    pub fn save(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref();
        let ctx = |e: io::Error| crate::with_context(e, format_args!("key file {}", path.display()));
        let text = format!(
            "# mesh machine key (Noise, Curve25519): keep it secret, mode 0600\n\
             private {}\n\
             public {}\n",
            BASE64.encode(&self.private),
            self.public
        );
        // create_new: O_EXCL, so we never follow a planted link or clobber
        // an old key; the mode is set at creation, so the key is never on
        // disk with wider permissions, whatever the umask.
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(ctx)?;
        file.write_all(text.as_bytes()).map_err(ctx)?;
        file.sync_all().map_err(ctx)
    }
}

/// A key pinned for two machines: a copy-paste slip in the deployment
/// file, and it would make the peer's identity ambiguous.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key {} is pinned for both {first} and {second}", key.fingerprint())]
pub struct PinError {
    /// The key.
    pub key: PublicKey,
    /// The machine it was pinned for first.
    pub first: String,
    /// The machine that tried to pin it again.
    pub second: String,
}

/// The peers' public keys a machine accepts, each with the machine it
/// belongs to: the deployment file's pins.
///
/// A machine may have several keys (to roll a key over, pin the new one
/// next to the old, then drop the old); a key belongs to one machine.
/// There is no "accept any key" setting: a link is either secured against
/// pinned keys or, for benchmarks, not secured at all.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    by_key: HashMap<PublicKey, String>,
}

impl Trust {
    /// Trusts nobody yet.
    #[must_use]
    pub fn new() -> Trust {
        Trust::default()
    }

    /// Accepts `key` as machine `machine`.
    ///
    /// # Errors
    ///
    /// [`PinError`] when the key is already pinned for another machine.
    /// Pinning the same key for the same machine again is harmless.
    pub fn pin(&mut self, machine: impl Into<String>, key: PublicKey) -> Result<(), PinError> {
        let machine = machine.into();
        match self.by_key.get(&key) {
            Some(first) if *first != machine => Err(PinError { key, first: first.clone(), second: machine }),
            Some(_) => Ok(()),
            None => {
                self.by_key.insert(key, machine);
                Ok(())
            }
        }
    }

    /// The machine `key` is pinned for, if any.
    #[must_use]
    pub fn machine(&self, key: &PublicKey) -> Option<&str> {
        self.by_key.get(key).map(String::as_str)
    }

    /// Every pinned key with its machine.
    pub fn iter(&self) -> impl Iterator<Item = (&PublicKey, &str)> {
        self.by_key.iter().map(|(k, m)| (k, m.as_str()))
    }

    /// Number of pinned keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when no key is pinned: every secured link will be refused.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}
