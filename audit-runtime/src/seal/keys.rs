//! The seal's Ed25519 key pair: written by `audit keygen`, read by the writer (private key) and by
//! `audit verify --key` (public key), and the signature check itself.

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, SigningKey, Verifier as _, VerifyingKey};
use std::path::{Path, PathBuf};

/// Why a key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The file is not an Ed25519 key in PEM (PKCS#8 / SPKI) form.
    #[error("{path}: not an Ed25519 {what} key in PEM form: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// "private" or "public".
        what: &'static str,
        /// What the parser said.
        reason: String,
    },
}

/// Writes a new Ed25519 private key to `path` (PKCS#8 PEM, mode 0600, refusing to overwrite or to
/// follow a symlink) and its public key to `path.pub` (SPKI PEM, the form `openssl pkey -pubout`
/// prints). Returns the public key.
pub fn keygen(path: &Path) -> Result<VerifyingKey, KeyError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| KeyError::Io { path, source }
    };
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| io(path)(std::io::Error::other(e.to_string())))?;
    let key = SigningKey::from_bytes(&seed);
    let private = key
        .to_pkcs8_pem(Default::default())
        .map_err(|e| io(path)(std::io::Error::other(e.to_string())))?;
    let public = key
        .verifying_key()
        .to_public_key_pem(Default::default())
        .map_err(|e| io(path)(std::io::Error::other(e.to_string())))?;
    // The public key's place is checked first, and a private key whose public half could not be
    // written is removed: a failed keygen leaves no half pair behind.
    let pub_path = public_key_path(path);
    if std::fs::symlink_metadata(&pub_path).is_ok() {
        return Err(io(&pub_path)(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the public key's file exists (or a link is there); nothing was written",
        )));
    }
    write_new(path, private.as_bytes(), 0o600).map_err(io(path))?;
    if let Err(e) = write_new(&pub_path, public.as_bytes(), 0o644) {
        let _ = std::fs::remove_file(path);
        return Err(io(&pub_path)(e));
    }
    Ok(key.verifying_key())
}

/// `PATH.pub`.
pub fn public_key_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    // `create_new` refuses any existing path, a symlink included, so a key is never written
    // through a link planted beside it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Reads the private key of [`keygen`].
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| KeyError::Format {
        path: path.to_owned(),
        what: "private",
        reason: e.to_string(),
    })
}

/// Reads a public key written by [`keygen`] (`PATH.pub`).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    VerifyingKey::from_public_key_pem(&text).map_err(|e| KeyError::Format {
        path: path.to_owned(),
        what: "public",
        reason: e.to_string(),
    })
}

/// The signing key of `config` (`seal_key_file`), if one is set.
pub fn configured_key(config: &crate::AuditConfig) -> Result<Option<SigningKey>, KeyError> {
    config
        .seal_key_file
        .as_deref()
        .map(load_signing_key)
        .transpose()
}

/// True when the seal carries a valid signature of its `hash` by `key`.
pub fn signature_is_valid(seal: &bson::RawDocument, key: &VerifyingKey) -> bool {
    let (Ok(hash), Ok(sig)) = (seal.get_str("hash"), seal.get_str("sig")) else {
        return false;
    };
    let Some(sig) = unhex(sig).and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
        return false;
    };
    key.verify(hash.as_bytes(), &Signature::from_bytes(&sig))
        .is_ok()
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
